"""`fablab`: run the server or the demo, and administer the lab from a shell."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from protocol import Level
from server.cli_billing import billing_app, ledger_app
from server.config import Settings
from server.service_layer.messagebus import MessageBus

app = typer.Typer(help="fablab-monitor server.", no_args_is_help=True)
T = TypeVar("T")

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(billing_app, name="billing")
app.add_typer(ledger_app, name="ledger")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database (FABLAB_DATABASE_URL) to the newest schema."""
    from server.adapters.migrations import upgrade

    upgrade(Settings().database_url, revision)
    typer.echo("database is up to date")


@db_app.command("check")
def db_check() -> None:
    """Fail if the models differ from the migrated schema."""
    from server.adapters.migrations import check

    check(Settings().database_url)
    typer.echo("no drift between models and migrations")


@app.command()
def serve(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the server: MQTT ingest and the web API on FABLAB_HTTP_HOST:FABLAB_HTTP_PORT."""
    import uvicorn

    from server.adapters.migrations import upgrade
    from server.api.main import create_app
    from server.bootstrap import ServerRuntime

    _logging(verbose)
    settings = Settings()
    upgrade(settings.database_url)
    with ServerRuntime(settings) as runtime:
        uvicorn.run(create_app(runtime), host=settings.http_host, port=settings.http_port)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="HTTP port of the dashboards and API.")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Folder of the demo database and controllers (reused).")
    ] = Path("./fablab-data"),
    broker: Annotated[
        str | None,
        typer.Option(help="Use this broker (mqtt://host:port) instead of the embedded one."),
    ] = None,
    pace: Annotated[float, typer.Option(help="Scale the simulated members' delays.")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a whole simulated lab: broker, server, controllers and members. Ctrl-C stops it."""
    from server.demo import run_demo

    _logging(verbose)

    def ready(url: str) -> None:
        from server.seed import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD

        typer.secho(f"fablab-monitor demo running on {url}  (Ctrl-C to stop)", fg="green")
        typer.echo(f"API docs: {url}docs · log in as {DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD}")

    run_demo(port=port, data_dir=data_dir, broker_url=broker, on_ready=ready, pace=pace)


@app.command("add-machine")
def add_machine(machine_id: str, name: str) -> None:
    """Register a machine and its controller (and a training type of the same id);
    prints the controller's snapshot key once."""
    from server.service_layer.commands import AddMachine

    with _admin_bus() as bus:
        key = _handle(bus, AddMachine(machine_id, name, Settings().site))
    typer.echo(f"machine {machine_id} added; controller key (keep it secret): {key}")


@app.command("add-member")
def add_member(name: str, email: str | None = None, badge: str | None = None) -> None:
    """Add a member, optionally with a badge UID; prints the member id."""
    from server.service_layer.commands import AddMember, RegisterBadge

    with _admin_bus() as bus:
        member_id = _handle(bus, AddMember(name, email=email))
        if badge:
            _handle(bus, RegisterBadge(member_id, badge))
    typer.echo(member_id)


@app.command("grant")
def grant(
    member_id: str,
    training_type_id: Annotated[
        str, typer.Argument(help="Training type (each machine has one of its own id).")
    ],
    level: Level = Level.AUTONOMOUS,
) -> None:
    """Grant a member a training (the machines it covers then accept their badge)."""
    from server.service_layer.commands import GrantTraining

    with _admin_bus() as bus:
        _handle(bus, GrantTraining(member_id, training_type_id, level, granted_by="cli"))
    typer.echo(f"{member_id} holds {training_type_id} ({level.value})")


@app.command("create-admin")
def create_admin(
    email: str,
    name: Annotated[str, typer.Option("--name", help="The admin's name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a member with the admin role, who can then log in to the web pages."""
    from server.domain.access import Role
    from server.service_layer.commands import AddMember, SetRoles
    from server.service_layer.imports import EMAIL_PATTERN

    email = email.strip().lower()
    if not EMAIL_PATTERN.match(email):
        _fail(f"not an email address: {email!r}")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _admin_bus() as bus:
        member_id = _handle(bus, AddMember(name, email=email, password=password))
        _handle(bus, SetRoles(member_id, frozenset({Role.ADMIN})))
    typer.echo(f"admin {email} created (member {member_id})")


@app.command("import-members")
def import_members(
    file: Annotated[Path, typer.Argument(help="CSV: name,email,category,badge_uid header.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import members and badges from CSV, reporting each line; exits 1 if a line failed."""
    import json

    from server.service_layer import imports

    try:
        data = file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    with _admin_bus() as bus:
        report = _call(lambda: imports.import_members(bus, data, None, dry_run=dry_run))
    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else imports.format_report(report))
    if report.errors:
        raise typer.Exit(1)


@app.command("purge-events")
def purge_events(
    days: Annotated[
        int | None,
        typer.Option(
            "--days", min=1, help="Keep this many days (default: FABLAB_RAW_EVENT_RETENTION_DAYS)."
        ),
    ] = None,
) -> None:
    """Delete raw controller events older than the retention period (sessions are kept)."""
    from server.service_layer.commands import PurgeRawEvents

    keep = days if days is not None else Settings().raw_event_retention_days
    with _admin_bus() as bus:
        count = _handle(bus, PurgeRawEvents(keep))
    typer.echo(f"purged {count} raw events older than {keep} days")


@app.command("controller-credentials")
def controller_credentials(
    machine_id: str,
    broker: Annotated[
        str | None, typer.Option(help="Broker URL the controller uses (default: the server's).")
    ] = None,
) -> None:
    """Issue a machine controller's MQTT login and snapshot key; prints its config to copy.

    The old login and key stop working. Then run `fablab mosquitto-passwd` for the broker.
    """
    from server.service_layer.commands import IssueControllerCredentials

    settings = Settings()
    with _admin_bus() as bus:
        issued = _handle(bus, IssueControllerCredentials(machine_id))
    typer.echo(
        "# /etc/fablab/controller.toml (keep it readable by the controller only)\n"
        f'controller_id = "{issued.controller_id}"\n'
        f'site = "{settings.site}"\n'
        f'machine = "{machine_id}"\n'
        f'broker_url = "{broker or settings.mqtt_url}"\n'
        f'username = "{issued.mqtt_username}"\n'
        f'password = "{issued.mqtt_password}"\n'
        f'key_hex = "{issued.key_hex}"\n'
        'data_dir = "/var/lib/fablab-pi"'
    )


@app.command("mosquitto-passwd")
def mosquitto_passwd() -> None:
    """Print the controllers' lines of a Mosquitto password file (`username:hash`).

    Append the server's own line with `mosquitto_passwd`, point `password_file` at the
    result and reload Mosquitto; deploy/mosquitto/acl limits each controller to its topics.
    """
    from server.bootstrap import ServerRuntime

    runtime = ServerRuntime(Settings(), mqtt_enabled=False)
    try:
        with runtime.new_uow() as uow:
            lines = [
                f"{c.mqtt_username}:{c.mqtt_password_hash}"
                for c in uow.controllers.all()
                if c.mqtt_username and c.mqtt_password_hash
            ]
    finally:
        runtime.engine.dispose()
    for line in lines:
        typer.echo(line)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _call(action: Callable[[], T]) -> T:
    """Run an action; a rule it breaks is printed as an error (exit status 1)."""
    from server.domain.errors import DomainError

    try:
        return action()
    except DomainError as exc:
        _fail(str(exc))


def _handle(bus: MessageBus, cmd: object) -> Any:
    return _call(lambda: bus.handle(cmd))


@contextmanager
def _admin_bus() -> Iterator[MessageBus]:
    """A bus over the configured database, acting as the shell administrator (no actor);
    configs are republished by the running server."""
    from server.bootstrap import ServerRuntime

    runtime = ServerRuntime(Settings(), mqtt_enabled=False)
    try:
        yield runtime.bus
    finally:
        runtime.engine.dispose()


if __name__ == "__main__":
    app()
