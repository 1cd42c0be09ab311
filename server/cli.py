"""`fablab`: run the server or the demo, and administer the lab from a shell."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from protocol import Level
from server.config import Settings
from server.service_layer.messagebus import MessageBus

app = typer.Typer(help="fablab-monitor server.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
    """Register a machine and its controller; prints the controller's snapshot key once."""
    from server.service_layer.commands import AddMachine

    bus = _bus()
    key = bus.handle(AddMachine(machine_id, name, Settings().site))
    typer.echo(f"machine {machine_id} added; controller key (keep it secret): {key}")


@app.command("add-member")
def add_member(name: str, email: str | None = None, badge: str | None = None) -> None:
    """Add a member, optionally with a badge UID."""
    from server.service_layer.commands import AddMember, RegisterBadge

    bus = _bus()
    member_id = bus.handle(AddMember(name, email=email))
    if badge:
        bus.handle(RegisterBadge(member_id, badge))
    typer.echo(member_id)


@app.command("grant")
def grant(member_id: str, machine_id: str, level: Level = Level.AUTONOMOUS) -> None:
    """Grant a member the training on a machine."""
    from server.service_layer.commands import GrantTraining

    _bus().handle(GrantTraining(member_id, machine_id, level, granted_by="cli"))
    typer.echo(f"{member_id} may use {machine_id} ({level.value})")


def _bus() -> MessageBus:
    """A bus over the configured database; configs are republished by the running server."""
    from server.bootstrap import ServerRuntime

    return ServerRuntime(Settings(), mqtt_enabled=False).bus


if __name__ == "__main__":
    app()
