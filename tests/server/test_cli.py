"""The `fablab` administration commands, run as a shell administrator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from protocol import EventKind, events_topic
from server.adapters.orm import Member, RawEvent
from server.bootstrap import ServerRuntime
from server.cli import app
from server.config import Settings
from server.service_layer import commands as cmds
from server.service_layer.accounts import LoginResult
from tests.fixtures import free_port
from tests.server.conftest import SITE, EventFactory

PASSWORD = "a-long-admin-password"


@pytest.fixture
def cli(database_url: str) -> CliRunner:
    # No broker on that port: configs a command changes are not sent anywhere.
    runner = CliRunner(env={"FABLAB_DATABASE_URL": database_url, "FABLAB_SITE": SITE,
                            "FABLAB_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"})
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return runner


@pytest.fixture
def runtime_of(database_url: str) -> Iterator[ServerRuntime]:
    runtime = ServerRuntime(Settings(database_url=database_url, site=SITE), mqtt_enabled=False)
    yield runtime
    runtime.engine.dispose()


def _run(cli: CliRunner, *args: str, input: str | None = None) -> Result:
    return cli.invoke(app, list(args), input=input)


def test_cli_create_admin_with_password_from_stdin_can_log_in(
    cli: CliRunner, runtime_of: ServerRuntime
) -> None:
    result = _run(
        cli,
        "create-admin",
        "Root@Lab.example",
        "--name",
        "Root Admin",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "admin root@lab.example created" in result.output
    login: LoginResult = runtime_of.bus.handle(cmds.Login("root@lab.example", PASSWORD))
    with runtime_of.new_uow() as uow:
        member = uow.members.get(login.member_id)
        assert member is not None
        assert member.name == "Root Admin"
        assert [r.role for r in member.roles] == ["admin"]


def test_cli_create_admin_prompts_twice(cli: CliRunner, runtime_of: ServerRuntime) -> None:
    result = _run(
        cli, "create-admin", "a@lab.example", "--name", "A", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input
    runtime_of.bus.handle(cmds.Login("a@lab.example", PASSWORD))


def test_cli_create_admin_refuses_a_short_password_and_creates_nothing(
    cli: CliRunner, runtime_of: ServerRuntime
) -> None:
    result = _run(
        cli, "create-admin", "a@lab.example", "--name", "A", "--password-stdin", input="short\n"
    )
    assert result.exit_code == 1
    assert "error: password must have at least" in result.output
    with runtime_of.new_uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Member)) == 0


def test_cli_create_admin_twice_is_an_error(cli: CliRunner) -> None:
    args = ["create-admin", "a@lab.example", "--name", "A", "--password-stdin"]
    assert _run(cli, *args, input=PASSWORD + "\n").exit_code == 0
    result = _run(cli, *args, input=PASSWORD + "\n")
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_cli_add_machine_member_and_grant(cli: CliRunner, runtime_of: ServerRuntime) -> None:
    result = _run(cli, "add-machine", "laser", "Laser cutter")
    assert result.exit_code == 0, result.output
    assert "machine laser added" in result.output
    result = _run(
        cli, "add-member", "Ada Lovelace", "--email", "ada@lab.example", "--badge", "04:A1:B2:C3"
    )
    assert result.exit_code == 0, result.output
    member_id = result.output.strip()
    result = _run(cli, "grant", member_id, "laser", "--level", "supervised")
    assert result.exit_code == 0, result.output
    assert f"{member_id} holds laser (supervised)" in result.output
    with runtime_of.new_uow() as uow:
        [view] = uow.trainings.views(machine_id="laser")
        assert (view.member_id, view.level.value) == (member_id, "supervised")
        assert [b.uid for b in uow.badges.of_member(member_id)] == ["04A1B2C3"]


def test_cli_errors_are_messages_not_tracebacks(cli: CliRunner) -> None:
    result = _run(cli, "grant", "ghost", "laser")
    assert result.exit_code == 1
    assert "error: no member ghost" in result.output
    assert "Traceback" not in result.output
    result = _run(cli, "add-member", "Eve", "--badge", "not-a-uid")
    assert result.exit_code == 1
    assert "error:" in result.output


def test_cli_import_members_prints_the_report(
    cli: CliRunner, runtime_of: ServerRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "members.csv"
    path.write_text("name,email,badge_uid\nGrace,grace@lab.example,04AABBCC\nBad,,xyz\n")

    dry = _run(cli, "import-members", str(path), "--dry-run")
    assert dry.exit_code == 1  # a line has an error
    assert "line 2: valid Grace" in dry.output
    assert "dry run: 1 valid, 1 with errors" in dry.output

    result = _run(cli, "import-members", str(path))
    assert result.exit_code == 1
    assert "line 2: imported Grace" in result.output
    assert "line 3: error: badge_uid 'xyz'" in result.output
    assert "imported 1, 1 with errors" in result.output

    path.write_text("name\nAlan\n")
    result = _run(cli, "import-members", str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["imported"], report["errors"]) == (1, [])
    with runtime_of.new_uow() as uow:
        names = uow.session.scalars(select(Member.name).order_by(Member.name)).all()
        assert list(names) == ["Alan", "Grace"]


def test_cli_import_members_unreadable_file(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_bytes("Nom\nÉlodie\n".encode("latin-1"))
    result = _run(cli, "import-members", str(path))
    assert result.exit_code == 1
    assert "error: the file is not UTF-8" in result.output
    result = _run(cli, "import-members", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1
    assert "error: cannot read" in result.output


def test_cli_purge_events(cli: CliRunner, runtime_of: ServerRuntime) -> None:
    runtime_of.bus.handle(cmds.AddMachine("laser", "Laser cutter", SITE))
    events = EventFactory()
    now = datetime.now(UTC)
    for age in (100, 40, 1):
        event = events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge")
        runtime_of.bus.handle(
            cmds.IngestEvent(
                events_topic(SITE, "laser"), event.encode(), received_at=now - timedelta(days=age)
            )
        )
    result = _run(cli, "purge-events", "--days", "60")
    assert result.exit_code == 0, result.output
    assert "purged 1 raw events older than 60 days" in result.output
    result = _run(cli, "purge-events")  # the setting: 365 days by default
    assert "purged 0 raw events older than 365 days" in result.output
    cli.env["FABLAB_RAW_EVENT_RETENTION_DAYS"] = "30"
    assert "purged 1 raw events older than 30 days" in _run(cli, "purge-events").output
    with runtime_of.new_uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(RawEvent)) == 1
    assert _run(cli, "purge-events", "--days", "0").exit_code == 2


def test_cli_controller_credentials_print_a_config_that_loads(
    cli: CliRunner, tmp_path: Path
) -> None:
    from firmware_pi.config import ControllerConfig

    _run(cli, "add-machine", "lathe", "Metal lathe")
    result = _run(cli, "controller-credentials", "lathe", "--broker", "mqtt://broker:1883")
    assert result.exit_code == 0, result.output
    config_file = tmp_path / "controller.toml"
    config_file.write_text(result.stdout)  # notes go to stderr
    config = ControllerConfig.load(config_file)
    assert (config.controller_id, config.username) == ("lathe", "controller-lathe")
    assert config.broker_url == "mqtt://broker:1883"
