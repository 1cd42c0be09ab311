"""A fresh install by docs/operations.md: its `e2e` blocks run as written, in order, on
this machine's Debian packages (PostgreSQL, Mosquitto), inside a private mount and
network namespace (tests/e2e/fresh_install/runner.sh says what is emulated and why)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
RUNNER = Path(__file__).with_name("fresh_install") / "runner.sh"
ADMIN_PASSWORD = "a-long-admin-password-for-the-e2e"
BLOCK = re.compile(r"<!-- e2e -->\n```sh\n(.*?)```", re.DOTALL)

pytestmark = pytest.mark.integration


def doc_blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


def test_fresh_install_doc_marks_every_install_step() -> None:
    blocks = doc_blocks()
    assert "apt-get install" in blocks[0]
    joined = "\n".join(blocks)
    for step in ("createdb", "/etc/fablab/server.env", "fablab db upgrade",
                 "fablab create-admin", "fablab tls-ca", "fablab mosquitto-config",
                 "systemctl enable --now fablab-server", "fablab add-machine",
                 "fablab controller-credentials", "deploy/pi/install.sh", "fablab-pi check"):
        assert step in joined, step


def _can_isolate() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount and network namespace)"
    if not shutil.which("unshare") or not shutil.which("pg_createcluster"):
        return "needs unshare (util-linux) and PostgreSQL's Debian packaging (postgresql)"
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot make a private namespace here: {probe.stderr.strip()}"
    return None


def test_fresh_install_by_the_doc_runs_a_lab_with_one_controller(tmp_path: Path) -> None:
    reason = _can_isolate()
    if reason:
        pytest.skip(reason)
    blocks_dir = tmp_path / "blocks"
    blocks_dir.mkdir()
    for number, text in enumerate(doc_blocks(), start=1):
        kind = "source" if number == 1 else "pi" if "deploy/pi/install.sh" in text else "admin"
        (blocks_dir / f"{number:02d}-{kind}.sh").write_text(text)
    answers = tmp_path / "answers"
    answers.write_text(f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n")
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "bash", str(RUNNER),
         str(tmp_path / "state"), str(blocks_dir), str(REPO), str(answers), ADMIN_PASSWORD],
        capture_output=True, text=True, timeout=240,
        start_new_session=True,  # no terminal: password prompts read standard input
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "FRESH INSTALL OK" in result.stdout
