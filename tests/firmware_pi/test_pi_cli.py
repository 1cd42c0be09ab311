"""The `fablab-pi` command line and what the Pi side imports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pi_helpers import KEY_HEX
from typer.testing import CliRunner

from firmware_pi import __version__
from firmware_pi.cli import app

runner = CliRunner()


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
controller_id = "ctrl-cli"
site = "testlab"
machine = "lathe"
broker_url = "mqtt://127.0.0.1:1"
key_hex = "{KEY_HEX}"
data_dir = "data"
"""
    )
    return path


def test_cli_prints_version() -> None:
    result = runner.invoke(app, ["version"])

    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_cli_run_rejects_bad_config_naming_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('site = "testlab"', 'site = "Test Lab"'))

    result = runner.invoke(app, ["run", "--config", str(path)])

    assert result.exit_code == 2
    assert "site" in result.output


def test_cli_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_pi", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "data" / "outbox.sqlite3").exists():
            assert time.monotonic() < deadline, "controller did not start"
            time.sleep(0.05)
        time.sleep(0.2)

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()

    assert process.returncode == 0, output
    assert "controller stopped" in output


def test_pi_side_imports_no_server_libraries() -> None:
    code = (
        "import sys, firmware_pi.cli, firmware_pi.bootstrap\n"
        "heavy = {'fastapi', 'sqlalchemy', 'pydantic', 'uvicorn', 'alembic'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_cli_check_reports_corrupt_files_without_moving_them(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "outbox.sqlite3").write_bytes(b"garbage" * 1000)
    (data / "snapshot.json").write_bytes(b"{not json")

    result = runner.invoke(app, ["check", "--config", str(path), "--mock-pins"])

    assert result.exit_code == 1
    assert "outbox" in result.output and "corrupt" in result.output
    assert sorted(p.name for p in data.iterdir()) == ["outbox.sqlite3", "snapshot.json"]
