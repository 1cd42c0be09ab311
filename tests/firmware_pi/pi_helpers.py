"""Shared test helpers for the controller: a test lab's snapshot, fake time and fake link."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from firmware_pi.app import ControllerApp, ManualBusy
from firmware_pi.bootstrap import build_controller
from firmware_pi.clock import Instant
from firmware_pi.config import ControllerConfig
from firmware_pi.link import Incoming, LinkEvent, LinkUp
from firmware_pi.reader import SimulatedReader
from protocol import (
    Ack,
    AuthRequest,
    Command,
    CommandKind,
    Event,
    EventKind,
    Level,
    MachineSettings,
    PermissionEntry,
    PermissionSnapshot,
    StaffEntry,
    StaffRole,
    TopicKind,
    badge_digest,
    encode_command,
    encode_config,
)

KEY = bytes(range(32))
KEY_HEX = KEY.hex()
SITE = "testlab"
MACHINE = "laser"
CONTROLLER_ID = "ctrl-laser"
WALL_START = 1_750_000_000.0

ALICE = "04A1B2C3"  # autonomous on the laser
BOB = "04B0B0B0"  # trainer on the laser
CAROL = "04CA401E"  # training expired
STRANGER = "04DEAD00"  # not on the snapshot


def make_snapshot(
    *,
    version: int = 1,
    out_of_service: bool = False,
    heartbeat_interval_s: int = 60,
    key: bytes = KEY,
    site: str = SITE,
    machine: str = MACHINE,
    controller_id: str = CONTROLLER_ID,
) -> PermissionSnapshot:
    """The test lab's laser snapshot: Alice and Bob may use it, Carol's training lapsed."""
    return PermissionSnapshot(
        site=site,
        machine=machine,
        controller_id=controller_id,
        version=version,
        issued_at=int(WALL_START),
        settings=MachineSettings(
            name="Laser cutter",
            heartbeat_interval_s=heartbeat_interval_s,
            out_of_service=out_of_service,
        ),
        permissions=(
            PermissionEntry(badge_digest(key, ALICE), "m-alice", Level.AUTONOMOUS),
            PermissionEntry(
                badge_digest(key, BOB), "m-bob", Level.TRAINER, expires_at=int(WALL_START) + 3600
            ),
            PermissionEntry(
                badge_digest(key, CAROL),
                "m-carol",
                Level.AUTONOMOUS,
                expires_at=int(WALL_START) - 1,
            ),
        ),
    )


def signed_config(snapshot: PermissionSnapshot | None = None, *, key: bytes = KEY) -> bytes:
    return encode_config(snapshot or make_snapshot(), key)


def make_config(data_dir: Path, **overrides: Any) -> ControllerConfig:
    values: dict[str, Any] = {
        "controller_id": CONTROLLER_ID,
        "site": SITE,
        "machine": MACHINE,
        "broker_url": "mqtt://127.0.0.1:1",  # nothing listens there: always offline
        "key_hex": KEY_HEX,
        "data_dir": data_dir,
        # No online check unless a test asks for one: a stranger is denied at once.
        "auth_timeout_s": 0,
    }
    values.update(overrides)
    return ControllerConfig.from_dict(values)


class FakeClock:
    """A clock that moves only when told to; thread-safe."""

    def __init__(self, wall: float = WALL_START, mono: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall = wall
        self._mono = mono

    def now(self) -> Instant:
        with self._lock:
            return Instant(self._wall, self._mono)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._mono += seconds


class FakeLink:
    """An in-memory broker connection: records published events, injects messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._inbox: list[LinkEvent] = []
        self.published: list[Event] = []
        self.auth_requests: list[AuthRequest] = []
        self.status_announcements = 0
        self.started = False
        self.stopped = False

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 2.0) -> None:
        self.stopped = True
        self._connected = False

    def publish_event(self, event: Event) -> bool:
        if not self._connected:
            return False
        with self._lock:
            self.published.append(event)
        return True

    def publish_auth_request(self, request: AuthRequest) -> bool:
        if not self._connected:
            return False
        with self._lock:
            self.auth_requests.append(request)
        return True

    def publish_status(self) -> bool:
        if not self._connected:
            return False
        with self._lock:
            self.status_announcements += 1
        return True

    def drain(self) -> list[LinkEvent]:
        with self._lock:
            events, self._inbox = self._inbox, []
        return events

    def published_seqs(self) -> list[int]:
        with self._lock:
            return [e.seq for e in self.published]

    # -- test controls ------------------------------------------------------------------

    def connect(self) -> None:
        self._connected = True
        with self._lock:
            self._inbox.append(LinkUp())

    def deliver(self, kind: TopicKind, payload: bytes) -> None:
        with self._lock:
            self._inbox.append(Incoming(kind, payload))

    def deliver_ack(
        self, up_to_seq: int, *, outbox_id: str, rejected: tuple[int, ...] = (),
        conflicts: tuple[int, ...] = (),
    ) -> None:
        ack = Ack(CONTROLLER_ID, outbox_id, up_to_seq, rejected, conflicts)
        self.deliver(TopicKind.ACK, ack.encode())


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


# -- a stepped app on mock pins (scenarios) ---------------------------------------------

RELAY, BUZZER, BUSY, OOPS = 17, 13, 5, 6
DAVE = "04DA7E00"  # supervised on the laser
MANAGER = "04AA0001"  # staff manager, no training on the laser
SUPERVISOR = "04AA0002"  # staff supervisor


def lab_snapshot(*, version: int = 1, issued_at: int | None = None, **settings: Any) -> (
    PermissionSnapshot
):
    base = make_snapshot(version=version)
    return replace(
        base,
        issued_at=int(WALL_START) if issued_at is None else issued_at,
        settings=replace(MachineSettings(name="Laser cutter"), **settings),
        permissions=(
            *base.permissions,
            PermissionEntry(badge_digest(KEY, DAVE), "m-dave", Level.SUPERVISED),
        ),
        staff=(
            StaffEntry(badge_digest(KEY, MANAGER), "m-manager", (StaffRole.MANAGER,)),
            StaffEntry(badge_digest(KEY, SUPERVISOR), "m-super", (StaffRole.SUPERVISOR,)),
        ),
    )


class Rig:
    """One stepped controller app on mock pins, with helpers to drive and observe it."""

    def __init__(self, data_dir: Path, *, snapshot: PermissionSnapshot | None,
                 connected: bool = False, reader: Any = None, notifier: Any = None,
                 clock: FakeClock | None = None, **config: Any) -> None:
        self.pins = MockFactory()
        self.clock = clock or FakeClock()
        self.link = FakeLink()
        self.busy = ManualBusy()
        cfg = make_config(data_dir, buzzer_pin=BUZZER, oops_pin=OOPS, **config)
        if snapshot is not None:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            cfg.snapshot_path.write_bytes(signed_config(snapshot))
        self.config = cfg
        if connected:
            self.link.connect()
        self.app: ControllerApp[Any] = build_controller(
            cfg, pin_factory=self.pins, reader=reader or SimulatedReader(), clock=self.clock,
            link=self.link, busy_input=self.busy, notifier=notifier,
        )
        self.app.read_timeout_s = 0.0
        self.app.begin()
        self.step()

    @property
    def relay_on(self) -> bool:
        return bool(self.pins.pin(RELAY).state)

    def step(self, n: int = 2) -> None:
        for _ in range(n):
            self.app.step()

    def tap(self, uid: str) -> None:
        self.app.reader.tap(uid)
        self.step()

    def advance(self, seconds: float, *, every: float = 1.0) -> None:
        """Let time pass in steps of `every` seconds, the loop running at each."""
        left = seconds
        while left > 1e-9:
            delta = min(every, left)
            self.clock.advance(delta)
            left -= delta
            self.app.step()

    def events(self, kind: EventKind | None = None) -> list[dict[str, Any]]:
        return [e.data for e in self.app.outbox.pending(limit=10_000)
                if kind is None or e.kind is kind]

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.app.outbox.pending(limit=10_000)]

    def deliver(self, kind: TopicKind, payload: bytes) -> None:
        self.link.deliver(kind, payload)
        self.step()

    def command(self, kind: CommandKind, *, command_id: str = "c-1", key: bytes = KEY,
                **fields: Any) -> bytes:
        now = int(self.clock.now().wall)
        payload = encode_command(
            Command(command_id, CONTROLLER_ID, SITE, MACHINE, kind, now, now + 300, **fields), key
        )
        self.deliver(TopicKind.COMMAND, payload)
        return payload

    def close(self) -> None:
        self.app.stop()
