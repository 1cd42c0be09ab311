"""scripts/_common.sh as scripts/demo and scripts/test use it, with a stand-in venv
Python whose pip prints what the real one prints."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
# A venv's python: `pip install` prints like pip, nothing at all with --quiet.
case "$*" in
    "-m pip install"*)
        case "$*" in *--quiet*|*" -q "*) exit 0 ;; esac
        echo "Collecting fastapi>=0.110"
        echo "  Using cached fastapi-0.115.0-py3-none-any.whl"
        echo "Installing collected packages: fastapi"
        echo "Successfully installed fastapi-0.115.0"
        exit "${FAKE_PIP_EXIT:-0}" ;;
    "--version") echo "Python 3.11.7" ;;
esac
exit 0
"""


def _ensure_venv(tmp_path: Path, *, pip_exit: int = 0) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (venv / "bin" / "pip").write_text(f"#!{python}\n")
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail; source scripts/_common.sh; ensure_venv"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "FABLAB_VENV": str(venv),
             "FAKE_PIP_EXIT": str(pip_exit)},
    )


def test_scripts_first_install_shows_each_package_while_pip_runs(tmp_path: Path) -> None:
    result = _ensure_venv(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Collecting fastapi>=0.110" in result.stderr
    assert "Successfully installed fastapi-0.115.0" in result.stderr
    assert "Using cached" not in result.stderr  # one line per package, not pip's all


def test_scripts_failed_install_shows_pips_output_and_fails(tmp_path: Path) -> None:
    result = _ensure_venv(tmp_path, pip_exit=1)
    assert result.returncode == 1
    assert "Using cached fastapi" in result.stderr  # the tail of the whole output
    assert "error: pip install -e '.[dev]' failed" in result.stderr
