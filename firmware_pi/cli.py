"""`fablab-pi`: the controller's command line (run, check, simulate, safe-off, version)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from firmware_pi import __version__
from firmware_pi.app import ManualBusy
from firmware_pi.bootstrap import build_controller, make_reader
from firmware_pi.broker_check import DEFAULT_TIMEOUT_S, BrokerCheckError, check_broker
from firmware_pi.config import ConfigError, ControllerConfig
from firmware_pi.hardware import Relay
from firmware_pi.logs import setup_logging
from firmware_pi.outbox import Outbox
from firmware_pi.reader import SimulatedReader
from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from firmware_pi.watchdog import SystemdNotifier

app = typer.Typer(help="fablab-monitor machine controller (Raspberry Pi).", no_args_is_help=True)
log = logging.getLogger(__name__)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The controller's TOML config file.")
]
MockOption = Annotated[
    bool, typer.Option("--mock-pins/--real-pins", help="gpiozero's mock pins instead of GPIO.")
]


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[str, typer.Option(help="text, or json (one object a line).")] = "text",
) -> None:
    """fablab-monitor machine controller (Raspberry Pi)."""
    setup_logging(log_level, log_format)


def _load(config: Path) -> ControllerConfig:
    try:
        return ControllerConfig.load(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _pin_factory(mock: bool) -> Any:
    if not mock:
        return None
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


@app.command()
def run(config: ConfigOption) -> None:
    """Run the controller until SIGTERM or Ctrl-C (the relay is off when it returns)."""
    cfg = _load(config)
    controller_app = build_controller(cfg, notifier=SystemdNotifier())

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        controller_app.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("fablab-pi %s starting", __version__)
    try:
        controller_app.run_forever()
    except Exception:
        raise typer.Exit(1) from None


@app.command()
def check(
    config: ConfigOption,
    mock_pins: MockOption = False,
    broker: Annotated[
        bool, typer.Option("--broker/--no-broker", help="Also log in to the broker and wait "
                           "for a signed config (stop the service first).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker's config.")]
    = DEFAULT_TIMEOUT_S,
) -> None:
    """Print the config, the reader, the pins, the stored snapshot and the outbox; check
    that the broker accepts this controller's login and sends it a signed config."""
    cfg = _load(config)
    problems = 0
    typer.echo(f"fablab-pi {__version__}")
    typer.echo("config:")
    for key, value in sorted(vars(cfg).items()):
        if key in ("key_hex", "password"):
            value = "(set)" if value else "(not set)"
        typer.echo(f"  {key} = {value}")
    typer.echo("pins:")
    try:
        from firmware_pi.bootstrap import make_hardware

        with make_hardware(cfg, pin_factory=_pin_factory(mock_pins)) as hardware:
            active = "high" if cfg.relay_active_high else "low"
            level = "high" if hardware.relay.pin.state else "low"
            typer.echo(f"  relay {cfg.relay_pin}: off (active {active}), pin {level}")
            typer.echo(f"  green LED {cfg.green_led_pin}, red LED {cfg.red_led_pin}: ok")
            typer.echo(f"  buzzer: {cfg.buzzer_pin if hardware.buzzer else 'not fitted'}")
            if hardware.busy is not None:
                busy = hardware.busy
                typer.echo(f"  busy input ({busy.kind}): reading {busy.reading:.2f}, "
                           f"busy={busy.is_busy}")
            else:
                typer.echo("  busy input: not fitted (busy time will be 0)")
            oops = hardware.oops
            typer.echo("  oops button: "
                       + (f"{cfg.oops_pin}, pressed={oops.button.is_pressed}" if oops
                          else "not fitted"))
    except Exception as exc:
        problems += 1
        typer.echo(f"  PROBLEM: {exc}")
    typer.echo("reader:")
    try:
        reader = make_reader(cfg)
        try:
            typer.echo(f"  {reader.describe()}")
        finally:
            reader.close()
    except Exception as exc:
        problems += 1
        typer.echo(f"  PROBLEM: {exc}")
    verifier = SnapshotVerifier(key=cfg.key, site=cfg.site, machine=cfg.machine,
                                controller_id=cfg.controller_id)
    snapshot = SnapshotStore(cfg.snapshot_path, verifier).load(quarantine=False)
    if snapshot is None:
        typer.echo("snapshot: none valid stored (every badge is denied until one arrives)")
    else:
        typer.echo(f"snapshot: version {snapshot.version}, issued at {snapshot.issued_at}, "
                   f"{len(snapshot.permissions)} badges, mode {snapshot.settings.mode.value}, "
                   f"out of service={snapshot.settings.out_of_service}")
    outbox: Outbox | None = None
    if cfg.outbox_path.exists():
        try:
            outbox = Outbox(cfg.outbox_path, max_events=cfg.outbox_max_events)
        except sqlite3.DatabaseError as exc:
            problems += 1
            typer.echo(f"  PROBLEM: outbox {cfg.outbox_path} is corrupt ({exc}); the next "
                       "start moves it aside and starts a fresh one")
    if outbox is not None:
        with outbox:
            service = outbox.local_service()
            interrupted = outbox.open_session()
            typer.echo(f"outbox: {outbox.outbox_id}, {len(outbox)} events pending "
                       f"(bound {outbox.max_events}), last seq {outbox.last_seq}")
            state = (f"OUT OF SERVICE ({service.reason})" if service.out_of_service
                     else "in service")
            typer.echo(f"local service state: {state}")
            if interrupted is not None:
                typer.echo(f"interrupted session: {interrupted.session_id} "
                           "(closed at the next start)")
    elif not cfg.outbox_path.exists():
        typer.echo("outbox: not created yet")
    if broker:
        problems += _check_broker(cfg, timeout)
    if problems:
        typer.echo(f"{problems} problem(s)")
        raise typer.Exit(1)
    typer.echo("ok")


def _check_broker(cfg: ControllerConfig, timeout: float) -> int:
    """Print the broker test's outcome; the number of problems (0 or 1)."""
    try:
        seen = check_broker(cfg, timeout)
    except BrokerCheckError as exc:
        typer.echo(f"broker: PROBLEM: {exc}")
        return 1
    typer.echo(f"broker: login {cfg.username or '(anonymous)'} accepted at {cfg.broker_url}; "
               f"signed config version {seen.version} arrived ({seen.badges} badges)")
    return 0


SIMULATE_HELP = "commands: tap UID | place UID | remove | busy on|off | oops | status | help | quit"


@app.command()
def simulate(config: ConfigOption, mock_pins: MockOption = True) -> None:
    """Run the controller with a simulated reader driven from the keyboard (bench tests)."""
    cfg = _load(config)
    reader = SimulatedReader()
    busy = ManualBusy()
    controller_app = build_controller(
        cfg, pin_factory=_pin_factory(mock_pins), reader=reader, busy_input=busy
    )
    controller_app.start()
    typer.echo(SIMULATE_HELP)

    def status() -> str:
        c = controller_app.controller
        relay = "ON" if controller_app.hardware.relay.is_active else "off"
        session = f"session {c.session.session_id} ({c.session.member_id})" if c.session else (
            "no session")
        return (f"relay {relay}, {session}, busy={c.busy}, "
                f"out_of_service={c.out_of_service}, online={controller_app.connected}, "
                f"outbox={len(controller_app.outbox)}")

    pause = threading.Event()
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command, args = words[0].lower(), words[1:]
            try:
                if command in ("quit", "exit"):
                    break
                if command == "tap" and args:
                    reader.tap(args[0])
                elif command == "place" and args:
                    reader.place(args[0])
                elif command == "remove":
                    reader.remove()
                elif command == "busy" and args:
                    busy.is_busy = args[0].lower() in ("on", "1", "true", "yes")
                elif command == "oops":
                    controller_app.report_oops()
                elif command == "status":
                    pass
                else:
                    typer.echo(SIMULATE_HELP)
                    continue
            except ValueError as exc:
                typer.echo(f"error: {exc}")
                continue
            pause.wait(0.2)  # let the loop act before reporting
            typer.echo(status())
    except KeyboardInterrupt:
        pass
    finally:
        controller_app.stop()
    typer.echo("stopped; relay off")


@app.command("safe-off")
def safe_off(config: ConfigOption, mock_pins: MockOption = False) -> None:
    """Drive the relay off and exit (systemd ExecStopPost, after a crash or watchdog kill)."""
    cfg = _load(config)
    with Relay(cfg.relay_pin, active_high=cfg.relay_active_high,
               pin_factory=_pin_factory(mock_pins)) as relay:
        relay.off()
    typer.echo("relay off")


@app.command()
def version() -> None:
    """Print the firmware version."""
    typer.echo(__version__)
