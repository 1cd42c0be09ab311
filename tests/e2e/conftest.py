"""Whole-system fixtures: a real Mosquitto, the server on SQLite, simulated controllers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_pi.app import ControllerApp
from firmware_pi.bootstrap import build_controller
from firmware_pi.config import ControllerConfig
from firmware_pi.reader import SimulatedReader
from protocol import Level
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from tests.fixtures import MosquittoServer

KEY_HEX = "5a" * 32
ADA_BADGE = "04A1B2C3"  # trained on the laser
NORA_BADGE = "04FFEE01"  # no training
_sites = itertools.count(1)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll until the predicate holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")


@dataclass
class Lab:
    """One isolated lab (its own site on the shared broker) and handles to drive it."""

    site: str
    broker: MosquittoServer
    database_url: str
    tmp: Path
    server: ServerRuntime | None = None
    controller: ControllerApp | None = None
    reader: SimulatedReader | None = None

    def start_server(self) -> ServerRuntime:
        settings = Settings(
            database_url=self.database_url,
            mqtt_url=self.broker.url,
            site=self.site,
            mqtt_client_id=f"server-{self.site}",
        )
        self.server = ServerRuntime(settings)
        self.server.start(wait=10)
        return self.server

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.stop()
        self.server = None

    def start_controller(self) -> ControllerApp:
        config = ControllerConfig(
            controller_id="laser",
            site=self.site,
            machine="laser",
            broker_url=self.broker.url,
            key_hex=KEY_HEX,
            data_dir=self.tmp / "controller",
        )
        self.reader = SimulatedReader()
        self.controller = build_controller(config, pin_factory=MockFactory(), reader=self.reader)
        self.controller.start()
        return self.controller

    @property
    def relay_on(self) -> bool:
        assert self.controller is not None
        return bool(self.controller.hardware.relay.is_active)

    def tap(self, uid: str) -> None:
        assert self.reader is not None
        self.reader.tap(uid)

    def uow(self):  # type: ignore[no-untyped-def]
        assert self.server is not None
        return self.server.new_uow()


@pytest.fixture
def lab(mosquitto: MosquittoServer, tmp_path: Path, database_url: str) -> Iterator[Lab]:
    """Server and controller of a one-machine lab, running, with the first snapshot in."""
    site = f"e2e{next(_sites)}"
    lab = Lab(site, mosquitto, database_url, tmp_path)
    server = lab.start_server()
    bus = server.bus
    bus.handle(cmds.AddMachine("laser", "Laser cutter", site, key_hex=KEY_HEX))
    bus.handle(cmds.AddMember("Ada Lovelace", member_id="ada"))
    bus.handle(cmds.RegisterBadge("ada", ADA_BADGE))
    bus.handle(cmds.GrantTraining("ada", "laser", Level.AUTONOMOUS))
    bus.handle(cmds.AddMember("Nora Newcomer", member_id="nora"))
    bus.handle(cmds.RegisterBadge("nora", NORA_BADGE))
    controller = lab.start_controller()
    wait_until(lambda: controller.controller.snapshot is not None, what="first snapshot")
    wait_until(
        lambda: (
            controller.controller.snapshot.lookup  # type: ignore[union-attr]
            and len(controller.controller.snapshot.permissions) == 1
        ),  # type: ignore[union-attr]
        what="snapshot with Ada's training",
    )
    try:
        yield lab
    finally:
        if lab.controller:
            lab.controller.stop()
        if lab.server:
            lab.server.stop()
