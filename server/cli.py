"""`fablab`: run the server or the demo, and administer the lab from a shell."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from protocol import Level
from server.cli_billing import billing_app, ledger_app
from server.config import Settings
from server.service_layer.messagebus import MessageBus

if TYPE_CHECKING:
    from server.adapters.mosquitto import BrokerLogin, ControllerGrant
    from server.bootstrap import ServerRuntime
    from server.service_layer.commands import OutgoingMessage

# One config path everywhere (deploy/, docs/operations.md).
CONTROLLER_CONFIG = "/etc/fablab/controller.toml"
DEFAULT_CONTROLLER_CA = "/etc/fablab/ca.crt"
DEFAULT_BROKER_DIR = Path("/etc/mosquitto/fablab")


class _OneLineErrors(TyperGroup):
    """Known failures (settings, database, files) end the command with one line saying
    what to do, not a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _explain(exc)
            if message is None:
                raise
            _fail(message)


app = typer.Typer(help="fablab-monitor server.", no_args_is_help=True, cls=_OneLineErrors)
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

    from server.adapters.listen import bind_http
    from server.adapters.migrations import upgrade
    from server.api.main import create_app, uvicorn_options
    from server.bootstrap import ServerRuntime

    _logging(verbose)
    settings = Settings()
    http_socket = bind_http(settings.http_host, settings.http_port)
    upgrade(settings.database_url)
    with ServerRuntime(settings) as runtime, contextlib.suppress(KeyboardInterrupt):
        # uvicorn stops on SIGINT/SIGTERM, then raises the signal again: a clean exit here.
        # The socket is bound already (a taken port fails before anything starts).
        config = uvicorn.Config(create_app(runtime), **uvicorn_options(settings))
        uvicorn.Server(config).run(sockets=[http_socket])


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
    """Register a machine and its controller (and a training type of the same id).

    The controller's login and key come from `fablab controller-credentials`.
    """
    from server.service_layer.commands import AddMachine

    with _admin_bus() as bus:
        _handle(bus, AddMachine(machine_id, name, Settings().site))
    typer.echo(
        f"machine {machine_id} added; next: `fablab controller-credentials {machine_id}` "
        "prints its controller's config"
    )


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
    level: Annotated[
        Level,
        typer.Option(
            metavar="LEVEL", help="supervised, autonomous or trainer.", show_choices=False
        ),
    ] = Level.AUTONOMOUS,
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
        str | None,
        typer.Option(help="Broker URL the controller uses, e.g. mqtts://broker.mylab.org:8883."),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option(help="Path of the lab CA on the controller (default for mqtts:// URLs: "
                     f"{DEFAULT_CONTROLLER_CA})."),
    ] = None,
) -> None:
    """Issue a machine controller's MQTT login and snapshot key; prints its config to copy.

    The old login and key stop working once the broker's files are regenerated with
    `fablab mosquitto-config` and Mosquitto is reloaded.
    """
    from protocol import BrokerAddress
    from server.service_layer.commands import IssueControllerCredentials

    settings = Settings()
    broker_url = broker or settings.mqtt_url
    if ca_file is None and BrokerAddress.parse(broker_url).tls:
        ca_file = DEFAULT_CONTROLLER_CA
    with _admin_bus() as bus:
        issued = _handle(bus, IssueControllerCredentials(machine_id))
    lines = [
        f"# {CONTROLLER_CONFIG} (root:fablab-pi, mode 640: it holds the controller's secrets)",
        f'controller_id = "{issued.controller_id}"',
        f'site = "{settings.site}"',
        f'machine = "{machine_id}"',
        f'broker_url = "{broker_url}"',
        *([f'ca_file = "{ca_file}"'] if ca_file else []),
        f'username = "{issued.mqtt_username}"',
        f'password = "{issued.mqtt_password}"',
        f'key_hex = "{issued.key_hex}"',
        'data_dir = "/var/lib/fablab-pi"',
    ]
    typer.echo("\n".join(lines))


@app.command("revoke-controller")
def revoke_controller(machine_id: str) -> None:
    """Take away a machine controller's broker login and key (a lost or stolen controller).

    Then regenerate the broker's files (`fablab mosquitto-config`) and reload Mosquitto:
    its connection is cut and its login refused. `controller-credentials` issues new ones.
    """
    from server.service_layer.commands import RevokeControllerCredentials

    with _admin_bus() as bus:
        username = _handle(bus, RevokeControllerCredentials(machine_id))
    typer.echo(
        f"revoked {username}; now run `fablab mosquitto-config --out DIR` and "
        "`systemctl reload mosquitto`"
    )


@app.command("mosquitto-config")
def mosquitto_config(
    out: Annotated[
        Path, typer.Option("--out", help="Folder of the broker's files (passwd, acl, fablab.conf).")
    ] = DEFAULT_BROKER_DIR,
    certs: Annotated[
        Path | None,
        typer.Option(help="Folder of broker.crt and broker.key (default: OUT/certs)."),
    ] = None,
    server_listener: Annotated[
        str,
        typer.Option(help="HOST:PORT of the server's plain MQTT listener (keep it off the "
                     "workshop network)."),
    ] = "127.0.0.1:1883",
    controller_port: Annotated[int, typer.Option(help="Port of the controllers' TLS listener.")]
    = 8883,
) -> None:
    """Write Mosquitto's password file, ACL and settings from the registered controllers.

    Run it after adding, replacing or revoking a controller, then reload Mosquitto
    (`systemctl reload mosquitto`): only the current logins are accepted.
    """
    from server.adapters import mosquitto
    from server.adapters.secrets import mosquitto_password_hash

    settings = Settings()
    server_login = _server_broker_login(settings, mosquitto_password_hash)
    host, _, port = server_listener.rpartition(":")
    if not host or not port.isdigit():
        _fail(f"--server-listener {server_listener!r}: give HOST:PORT, e.g. 127.0.0.1:1883")
    certs = certs or out / "certs"
    listeners = mosquitto.Listeners(
        server_host=host,
        server_port=int(port),
        controller_port=controller_port,
        certfile=(certs / "broker.crt").resolve(),
        keyfile=(certs / "broker.key").resolve(),
    )
    grants_list = _read_controller_grants()
    try:
        written = mosquitto.write_broker_config(out, server_login, grants_list, listeners)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc} (run as a user who may write there)")
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"{len(grants_list)} controller login(s); reload Mosquitto to apply: "
               "systemctl reload mosquitto")


@app.command("tls-ca")
def tls_ca(
    out: Annotated[Path, typer.Option("--out", help="Folder of ca.crt and ca.key.")] = Path(
        "/etc/fablab/ca"
    ),
    name: Annotated[str, typer.Option(help="The CA's name, shown in its certificate.")] = (
        "fablab-monitor lab CA"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing CA.")] = False,
) -> None:
    """Create the lab's certificate authority (ca.crt goes to every controller)."""
    from server.adapters.tls import make_ca

    issued = make_ca(out, name, force=force)
    typer.echo(f"wrote {issued.certificate} (copy it to each controller as "
               f"{DEFAULT_CONTROLLER_CA}) and {issued.key} (keep it private)")


@app.command("tls-cert")
def tls_cert(
    host: Annotated[
        list[str], typer.Option("--host", help="Name or address controllers use (repeatable).")
    ],
    ca: Annotated[Path, typer.Option("--ca", help="Folder of the lab CA.")] = Path(
        "/etc/fablab/ca"
    ),
    out: Annotated[Path, typer.Option("--out", help="Folder of broker.crt and broker.key.")] = (
        DEFAULT_BROKER_DIR / "certs"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing certificate.")] = False,
) -> None:
    """Issue the broker's TLS certificate, signed by the lab CA."""
    from server.adapters.tls import make_broker_cert

    issued = make_broker_cert(ca, out, host, force=force)
    typer.echo(f"wrote {issued.certificate} and {issued.key}, valid until "
               f"{issued.not_after:%Y-%m-%d}; restart Mosquitto to use them")


def _server_broker_login(settings: Settings, hasher: Callable[[str], str]) -> BrokerLogin:
    from server.adapters.mosquitto import CONTROLLER_USERNAME_PREFIX, BrokerLogin

    if not settings.mqtt_username or not settings.mqtt_password:
        _fail("the broker needs the server's login too: set FABLAB_MQTT_USERNAME and "
              "FABLAB_MQTT_PASSWORD in the server's settings")
    if settings.mqtt_username.startswith(CONTROLLER_USERNAME_PREFIX):
        _fail(f"FABLAB_MQTT_USERNAME must not start with {CONTROLLER_USERNAME_PREFIX!r} "
              "(controllers' names): use e.g. fablab-server")
    return BrokerLogin(settings.mqtt_username, hasher(settings.mqtt_password))


def _read_controller_grants() -> list[ControllerGrant]:
    from server.adapters.mosquitto import BrokerLogin, ControllerGrant

    with _admin_runtime() as runtime, runtime.new_uow() as uow:
        return [
            ControllerGrant(
                c.id, BrokerLogin(c.mqtt_username, c.mqtt_password_hash),
                c.machine.site, c.machine_id,
            )
            for c in uow.controllers.all()
            if c.mqtt_username and c.mqtt_password_hash
        ]


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
def _admin_runtime() -> Iterator[ServerRuntime]:
    """The configured database, checked to be migrated; what its bus publishes is sent in
    one short broker connection at the end (not on failure)."""
    from server.adapters.migrations import schema_problem
    from server.bootstrap import ServerRuntime

    settings = Settings()
    runtime = ServerRuntime(settings, mqtt_enabled=False)
    outgoing: list[OutgoingMessage] = []
    runtime.bus.publish = outgoing.append
    try:
        problem = schema_problem(runtime.engine)
        if problem:
            _fail(problem)
        yield runtime
    finally:
        runtime.engine.dispose()
    if outgoing:
        _send(settings, outgoing)


def _send(settings: Settings, outgoing: list[OutgoingMessage]) -> None:
    """Send the configs (and commands) the command changed, as the server would."""
    from server.adapters.mqtt_oneshot import publish_now

    problem = publish_now(settings, outgoing)
    if problem:
        typer.secho(f"note: configs not sent now: {problem}; the server sends them when it "
                    "next connects to the broker", fg="yellow", err=True)


@contextmanager
def _admin_bus() -> Iterator[MessageBus]:
    """A bus over the configured database, acting as the shell administrator (no actor);
    the configs it changes are sent to the broker at the end."""
    with _admin_runtime() as runtime:
        yield runtime.bus


def _explain(exc: Exception) -> str | None:
    """One line saying what went wrong and what to do, for the failures an operator can
    fix (None: a bug, shown with its traceback)."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from server.adapters.listen import PortTakenError
    from server.adapters.tls import TlsFileError
    from server.config import SettingsFileError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        name = "FABLAB_" + "_".join(str(part) for part in first["loc"]).upper()
        return f"setting {name}: {first['msg']} (fix it in the environment or the settings file)"
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return (f"database error: {reason} (check FABLAB_DATABASE_URL, that the database "
                "server runs, and `fablab db upgrade`)")
    if isinstance(exc, SettingsFileError | TlsFileError | PortTakenError):
        return str(exc)
    return None


if __name__ == "__main__":
    app()
