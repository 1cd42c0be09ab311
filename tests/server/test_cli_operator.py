"""`fablab` as a new operator meets it: each failure is one line that says what to do,
and each step's output agrees with the next documented step."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from server.bootstrap import ServerRuntime
from server.cli import app
from server.config import Settings
from tests.fixtures import free_port

SITE = "lab"
SERVER_LOGIN = {"FABLAB_MQTT_USERNAME": "fablab-server", "FABLAB_MQTT_PASSWORD": "s3cret-pw"}


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fablab.sqlite3'}"


@pytest.fixture
def fresh(tmp_path: Path) -> CliRunner:
    """A CLI on a database that exists but was never migrated."""
    # No broker on that port: the configs a command changes are not sent (a note says so).
    return CliRunner(env={"FABLAB_DATABASE_URL": _sqlite(tmp_path), "FABLAB_SITE": SITE,
                          "FABLAB_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
                          "FABLAB_ENV_FILE": None, **SERVER_LOGIN})


@pytest.fixture
def cli(fresh: CliRunner) -> CliRunner:
    _ok(fresh, "db", "upgrade")
    return fresh


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def _ok(cli: CliRunner, *args: str) -> str:
    result = _run(cli, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_add_machine_on_a_never_migrated_database_says_run_db_upgrade(
    fresh: CliRunner,
) -> None:
    line = _one_line_error(_run(fresh, "add-machine", "laser", "Laser cutter"))
    assert "run `fablab db upgrade`" in line


def test_cli_add_machine_prints_no_key_that_controller_credentials_replaces(
    cli: CliRunner, tmp_path: Path
) -> None:
    output = _ok(cli, "add-machine", "laser", "Laser cutter")
    runtime = ServerRuntime(Settings(database_url=_sqlite(tmp_path)), mqtt_enabled=False)
    try:
        with runtime.new_uow() as uow:
            controller = uow.controllers.get("laser")
            assert controller is not None
            assert controller.key_hex not in output
    finally:
        runtime.engine.dispose()
    assert "fablab controller-credentials laser" in output  # the next step


def test_cli_grant_help_keeps_every_level_name_whole() -> None:
    runner = CliRunner(env={"COLUMNS": "80", "TERM": "dumb"})
    output = _ok(runner, "grant", "--help")
    words = set(output.replace(",", " ").replace(".", " ").split())
    assert {"supervised", "autonomous", "trainer"} <= words


def test_cli_demo_on_a_taken_port_fails_at_once_in_one_line(
    cli: CliRunner, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(cli, "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo"))
    line = _one_line_error(result)
    assert f"port {port}" in line
    assert "running on" not in result.output
    assert not (tmp_path / "demo").exists()  # nothing was started


def test_cli_bad_setting_is_one_line_naming_it(cli: CliRunner) -> None:
    cli.env["FABLAB_MQTT_URL"] = "http://broker"
    line = _one_line_error(_run(cli, "add-machine", "laser", "Laser"))
    assert "FABLAB_MQTT_URL" in line


def test_cli_unreachable_database_is_one_line(cli: CliRunner) -> None:
    cli.env["FABLAB_DATABASE_URL"] = "postgresql+psycopg://fablab:pw@127.0.0.1:1/fablab"
    line = _one_line_error(_run(cli, "add-machine", "laser", "Laser"))
    assert "FABLAB_DATABASE_URL" in line


def test_cli_reads_the_settings_file_named_by_fablab_env_file(
    cli: CliRunner, tmp_path: Path
) -> None:
    env_file = tmp_path / "server.env"
    env_file.write_text(f"FABLAB_DATABASE_URL={_sqlite(tmp_path)}\nFABLAB_SITE=otherlab\n")
    del cli.env["FABLAB_DATABASE_URL"], cli.env["FABLAB_SITE"]
    cli.env["FABLAB_ENV_FILE"] = str(env_file)
    _ok(cli, "add-machine", "laser", "Laser")
    config = tomllib.loads(_ok(cli, "controller-credentials", "laser"))
    assert config["site"] == "otherlab"


def test_cli_missing_settings_file_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    cli.env["FABLAB_ENV_FILE"] = str(tmp_path / "nowhere.env")
    line = _one_line_error(_run(cli, "add-machine", "laser", "Laser"))
    assert "nowhere.env" in line


def test_cli_mosquitto_config_names_users_as_controller_credentials_issues(
    cli: CliRunner, tmp_path: Path
) -> None:
    _ok(cli, "add-machine", "laser-1", "Laser")
    config = tomllib.loads(_ok(cli, "controller-credentials", "laser-1"))
    out = tmp_path / "broker"
    _ok(cli, "mosquitto-config", "--out", str(out))
    acl = (out / "acl").read_text()
    block = acl.split(f"user {config['username']}\n")[1]
    assert block.startswith("topic write fablab/v1/lab/laser-1/status\n")
    users = [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == ["fablab-server", config["username"]]
    assert f"password_file {out.resolve()}/passwd" in (out / "fablab.conf").read_text()


def test_cli_revoke_controller_drops_its_login_from_the_broker_files(
    cli: CliRunner, tmp_path: Path
) -> None:
    _ok(cli, "add-machine", "laser-1", "Laser")
    config = tomllib.loads(_ok(cli, "controller-credentials", "laser-1"))
    assert config["username"] in _ok(cli, "revoke-controller", "laser-1")
    _ok(cli, "mosquitto-config", "--out", str(tmp_path / "broker"))
    assert config["username"] not in (tmp_path / "broker" / "passwd").read_text()
    assert config["username"] not in (tmp_path / "broker" / "acl").read_text()
    line = _one_line_error(_run(cli, "revoke-controller", "laser-1"))
    assert "no controller login" in line


def test_cli_mosquitto_config_without_the_servers_login_is_one_line(
    cli: CliRunner, tmp_path: Path
) -> None:
    cli.env["FABLAB_MQTT_PASSWORD"] = None
    line = _one_line_error(_run(cli, "mosquitto-config", "--out", str(tmp_path / "broker")))
    assert "FABLAB_MQTT_PASSWORD" in line


def test_cli_tls_ca_refuses_to_replace_a_ca_in_one_line(cli: CliRunner, tmp_path: Path) -> None:
    _ok(cli, "tls-ca", "--out", str(tmp_path / "ca"))
    line = _one_line_error(_run(cli, "tls-ca", "--out", str(tmp_path / "ca")))
    assert "--force" in line
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o077 == 0  # private


def test_cli_tls_cert_without_a_ca_says_run_tls_ca(cli: CliRunner, tmp_path: Path) -> None:
    line = _one_line_error(_run(cli, "tls-cert", "--ca", str(tmp_path / "none"), "--out",
                                str(tmp_path / "certs"), "--host", "broker.lab"))
    assert "fablab tls-ca" in line


def test_cli_controller_credentials_for_tls_name_the_lab_ca(cli: CliRunner) -> None:
    _ok(cli, "add-machine", "laser-1", "Laser")
    config = tomllib.loads(_ok(cli, "controller-credentials", "laser-1", "--broker",
                               "mqtts://broker.lab:8883"))
    assert config["ca_file"] == "/etc/fablab/ca.crt"


def test_cli_serve_on_a_taken_port_fails_at_once_in_one_line(cli: CliRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli.env["FABLAB_HTTP_PORT"] = str(port)
        line = _one_line_error(_run(cli, "serve"))
    assert f"port {port}" in line
