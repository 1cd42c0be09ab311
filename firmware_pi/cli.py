"""`fablab-pi`: the controller's command line."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from firmware_pi import __version__
from firmware_pi.bootstrap import build_controller
from firmware_pi.config import ConfigError, ControllerConfig

app = typer.Typer(help="fablab-monitor machine controller (Raspberry Pi).", no_args_is_help=True)
log = logging.getLogger(__name__)


@app.callback()
def main(
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """fablab-monitor machine controller (Raspberry Pi)."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The controller's TOML config file.")
    ],
) -> None:
    """Run the controller until SIGTERM or Ctrl-C (the relay is off when it returns)."""
    try:
        cfg = ControllerConfig.load(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    controller_app = build_controller(cfg)

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
def version() -> None:
    """Print the firmware version."""
    typer.echo(__version__)
