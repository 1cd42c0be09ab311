"""`fablab demo`: broker, server, simulated controllers and members in one process."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn

from firmware_pi.config import ControllerConfig
from server.adapters.listen import bind_http
from server.adapters.migrations import upgrade
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.seed import DEMO_MEMBERS, DemoMember, seed_demo_lab
from server.seed_billing import seed_demo_billing

logger = logging.getLogger(__name__)

DEMO_SITE = "lab"


DEMO_BUSY_PIN = 5  # the simulated current sensor of each machine


@dataclass
class _MachineSchedule:
    next_action_at: float
    member: DemoMember | None = None
    busy_from: float | None = None  # the tool draws current between these times
    busy_until: float | None = None


@dataclass
class SimulatedFloor:
    """Members walking up to machines: trained ones mostly, sometimes someone who is not."""

    taps: dict[str, Callable[[str], None]]  # machine id -> tap(badge uid)
    busy: dict[str, Callable[[bool], None]] = field(default_factory=dict)  # current sensor
    members: tuple[DemoMember, ...] = DEMO_MEMBERS
    pace: float = 1.0  # multiplies every delay
    seed: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        rng = random.Random(self.seed)
        now = time.monotonic()
        schedule = {m: _MachineSchedule(now + rng.uniform(1, 6) * self.pace) for m in self.taps}
        self._thread = threading.Thread(
            target=self._run, args=(rng, schedule), name="simulated-floor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self, rng: random.Random, schedule: dict[str, _MachineSchedule]) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for machine_id, slot in schedule.items():
                self._drive_busy(machine_id, slot, now)
                if now >= slot.next_action_at:
                    self._act(rng, machine_id, slot, schedule, now)

    def _drive_busy(self, machine_id: str, slot: _MachineSchedule, now: float) -> None:
        sensor = self.busy.get(machine_id)
        if sensor is None or slot.busy_from is None or slot.busy_until is None:
            return
        sensor(slot.busy_from <= now < slot.busy_until)

    def _act(
        self,
        rng: random.Random,
        machine_id: str,
        slot: _MachineSchedule,
        schedule: dict[str, _MachineSchedule],
        now: float,
    ) -> None:
        if slot.member is not None:
            if machine_id in self.busy:
                self.busy[machine_id](False)
            slot.busy_from = slot.busy_until = None
            self.taps[machine_id](slot.member.badge_uid)  # tap out
            slot.member = None
            slot.next_action_at = now + rng.uniform(3, 10) * self.pace
            return
        working = {s.member.member_id for s in schedule.values() if s.member is not None}
        trained = [
            m for m in self.members if machine_id in m.trainings and m.member_id not in working
        ]
        if trained and rng.random() < 0.8:
            slot.member = rng.choice(trained)
            self.taps[machine_id](slot.member.badge_uid)
            length = rng.uniform(8, 40) * self.pace
            slot.next_action_at = now + length
            # Setting up first, then the tool runs for most of the session.
            slot.busy_from = now + length * rng.uniform(0.1, 0.3)
            slot.busy_until = now + length * rng.uniform(0.7, 0.95)
        else:  # someone without the training tries: the controller refuses
            untrained = [m for m in self.members if machine_id not in m.trainings]
            if untrained:
                self.taps[machine_id](rng.choice(untrained).badge_uid)
            slot.next_action_at = now + rng.uniform(2, 6) * self.pace
        logger.debug("floor: %s acted on %s", slot.member, machine_id)


def _controller_configs(
    runtime: ServerRuntime, data_dir: Path, broker_url: str
) -> list[ControllerConfig]:
    with runtime.new_uow() as uow:
        return [
            ControllerConfig(
                controller_id=m.controller.id,
                site=m.site,
                machine=m.id,
                broker_url=broker_url,
                key_hex=m.controller.key_hex,
                data_dir=data_dir / "controllers" / m.id,
                reader="simulated",
                busy_pin=DEMO_BUSY_PIN,
            )
            for m in uow.machines.all()
            if m.controller is not None
        ]


def _current_sensor(pins: Any) -> Callable[[bool], None]:
    """Drive a mock pin as a machine's current-sense switch would."""
    pin = pins.pin(DEMO_BUSY_PIN)

    def drive(busy: bool) -> None:
        if busy != bool(pin.state):
            pin.drive_high() if busy else pin.drive_low()

    return drive


def _seed_billing_history(settings: Settings) -> None:
    """Last month's prices, credits and sessions, through a runtime with no MQTT link (the
    history's acks go to no controller)."""
    history = ServerRuntime(settings, mqtt_enabled=False)
    try:
        policy = settings.billing_policy()
        today = datetime.now(policy.tz).date()
        period = seed_demo_billing(history.bus, site=DEMO_SITE, policy=policy, today=today)
        logger.info("demo billing: last month's sessions loaded, period %s open", period)
    except Exception:
        logger.exception("demo billing history not loaded")
    finally:
        history.engine.dispose()


def _start_billing_history(settings: Settings) -> None:
    """Load the history beside the live demo (it takes a few seconds of ingest), so the
    dashboards answer at once; a first run stopped meanwhile keeps part of it."""
    threading.Thread(
        target=_seed_billing_history, args=(settings,), name="demo-billing", daemon=True
    ).start()


def run_demo(
    *,
    port: int = 8000,
    data_dir: Path = Path("./fablab-data"),
    broker_url: str | None = None,
    on_ready: Callable[[str], None] | None = None,
    pace: float = 1.0,
) -> None:
    """Run the whole demo until interrupted (Ctrl-C), then stop every part cleanly."""
    from gpiozero.pins.mock import MockFactory

    from firmware_pi.bootstrap import build_controller
    from firmware_pi.logs import tag_controller_logs
    from firmware_pi.reader import SimulatedReader
    from server.broker import EmbeddedBroker

    tag_controller_logs()  # five controllers log into this process: say whose each line is

    http_socket = bind_http("127.0.0.1", port)  # a taken port fails here, before anything
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if broker_url is None:
        broker = EmbeddedBroker(host="127.0.0.1", port=0)
        broker.start()
        broker_url = broker.url
    settings = Settings(
        database_url=f"sqlite:///{data_dir / 'fablab.sqlite3'}",
        mqtt_url=broker_url,
        site=DEMO_SITE,
        data_dir=data_dir,
        http_port=port,
        mqtt_client_id=f"fablab-demo-server-{port}",
    )
    upgrade(settings.database_url)
    runtime = ServerRuntime(settings)
    controllers = []
    readers: dict[str, SimulatedReader] = {}
    sensors: dict[str, Callable[[bool], None]] = {}
    floor = None
    try:
        with runtime.new_uow() as uow:
            empty = not uow.machines.all()
        if empty:
            seed_demo_lab(runtime.bus, site=DEMO_SITE, heartbeat_interval_s=10)
            _start_billing_history(settings)
        runtime.start()
        for config in _controller_configs(runtime, data_dir, broker_url):
            readers[config.machine] = SimulatedReader()
            pins = MockFactory()
            sensors[config.machine] = _current_sensor(pins)
            app = build_controller(config, pin_factory=pins, reader=readers[config.machine])
            app.start()
            controllers.append(app)
        floor = SimulatedFloor({m: r.tap for m, r in readers.items()}, sensors, pace=pace)
        floor.start()
        url = f"http://127.0.0.1:{port}/"
        logger.info("demo running: %s (broker %s, data in %s)", url, broker_url, data_dir)
        if on_ready:
            on_ready(url)
        server = uvicorn.Server(uvicorn.Config(
            create_app(runtime), log_level="warning", server_header=False, proxy_headers=False
        ))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
            server.run(sockets=[http_socket])
    finally:
        http_socket.close()
        if floor:
            floor.stop()
        for app in controllers:
            app.stop()
        runtime.stop()
        if broker:
            broker.stop()
