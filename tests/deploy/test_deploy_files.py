"""deploy/: the files an operator installs are valid for the tools that read them, and
agree with each other and with the code on paths and names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from server.adapters.mosquitto import Listeners, render_conf
from server.cli import CONTROLLER_CONFIG, DEFAULT_BROKER_DIR, DEFAULT_CONTROLLER_CA

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
E2E = REPO / "tests" / "e2e" / "fresh_install"
SHELL_SCRIPTS = [
    DEPLOY / "pi" / "install.sh",
    DEPLOY / "server" / "fablab",
    *(REPO / "scripts" / name for name in ("demo", "test", "_common.sh")),
    E2E / "runner.sh",
    *(E2E / "shims" / name for name in ("apt-get", "python3", "sudo", "venv-pip")),
]
VENV_BIN = "/opt/fablab/venv/bin/"


def test_deploy_broker_conf_is_what_mosquitto_config_writes() -> None:
    shipped = (DEPLOY / "mosquitto" / "fablab.conf").read_text()
    assert shipped == render_conf(DEFAULT_BROKER_DIR, Listeners())


def test_deploy_broker_conf_refuses_anonymous_and_binds_client_ids_on_tls() -> None:
    conf = (DEPLOY / "mosquitto" / "fablab.conf").read_text()
    settings = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert "allow_anonymous false" in settings
    assert "listener 1883 127.0.0.1" in settings  # plain MQTT only on loopback
    tls = settings[settings.index("listener 8883"):]
    assert "require_certificate false" in tls
    assert "use_username_as_clientid true" in tls
    assert any(line.startswith("certfile ") for line in tls)


def test_deploy_has_no_controller_login_named_otherwise_than_credentials_do() -> None:
    # The ACL once said `user ctl-<machine>` while credentials were `controller-<machine>`.
    for path in [*DEPLOY.rglob("*"), REPO / "docs" / "operations.md"]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not re.search(r"\buser ctl-", text), path
            assert "/etc/fablab-pi" not in text, path


def test_deploy_compose_file_is_valid_yaml_with_the_three_services() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"server", "db", "mosquitto"}
    mosquitto = compose["services"]["mosquitto"]
    assert "/etc/mosquitto/fablab:/etc/mosquitto/fablab:ro" in mosquitto["volumes"]
    assert mosquitto["ports"] == ["8883:8883"]  # the plain listener stays on the network
    assert compose["services"]["server"]["env_file"] == "/etc/fablab/server.env"
    build = compose["services"]["server"]["build"]
    assert (DEPLOY / "compose" / build["context"] / build["dockerfile"]).is_file()
    conf = (DEPLOY / "compose" / "mosquitto.conf").read_text()
    assert f"include_dir {DEFAULT_BROKER_DIR}" in conf


def test_deploy_units_share_one_venv_and_one_config_folder() -> None:
    server = (DEPLOY / "systemd" / "fablab-server.service").read_text()
    pi = (DEPLOY / "systemd" / "fablab-pi.service").read_text()
    assert f"ExecStart={VENV_BIN}fablab serve" in server
    assert "Environment=FABLAB_ENV_FILE=/etc/fablab/server.env" in server
    assert f"--config {CONTROLLER_CONFIG}" in pi
    assert f"ExecStart={VENV_BIN}fablab-pi " in pi
    install = (DEPLOY / "pi" / "install.sh").read_text()
    assert f'CONFIG="$CONFIG_DIR/{Path(CONTROLLER_CONFIG).name}"' in install
    assert 'CONFIG_DIR=/etc/fablab' in install
    assert Path(DEFAULT_CONTROLLER_CA).parent == Path(CONTROLLER_CONFIG).parent
    wrapper = (DEPLOY / "server" / "fablab").read_text()
    assert "FABLAB_ENV_FILE=/etc/fablab/server.env" in wrapper


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_deploy_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # The unit as shipped, but its programs in a stub venv (verify checks they exist).
    stub_bin = tmp_path / "venv" / "bin"
    stub_bin.mkdir(parents=True)
    for program in ("fablab", "fablab-pi"):
        (stub_bin / program).write_text("#!/bin/sh\n")
        (stub_bin / program).chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(VENV_BIN, f"{stub_bin}/"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    if "Failed to connect to bus" in result.stderr or "System has not been booted" in (
        result.stderr
    ):
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr  # no warning about the unit


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[s.name for s in SHELL_SCRIPTS])
def test_deploy_shell_script_passes_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: scripts/test installs it (apt-get install "
                    "shellcheck)")
    result = subprocess.run(
        [shellcheck, "--external-sources", str(script)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout


def test_deploy_broker_conf_turns_nagle_off_on_client_sockets() -> None:
    conf = (DEPLOY / "mosquitto" / "fablab.conf").read_text()
    assert "set_tcp_nodelay true" in conf.splitlines()
