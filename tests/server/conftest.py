"""Server fixtures: a migrated database (SQLite and PostgreSQL) and a wired runtime."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol import Event, EventKind, Level
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.access import Role
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage

SITE = "lab"
KEY_HEX = "11" * 32


@pytest.fixture
def runtime(database_url: str) -> Iterator[ServerRuntime]:
    runtime = ServerRuntime(Settings(database_url=database_url, site=SITE), mqtt_enabled=False)
    yield runtime
    runtime.dispose()


@pytest.fixture
def sent(runtime: ServerRuntime) -> list[OutgoingMessage]:
    """The MQTT messages the bus sends, in order."""
    messages: list[OutgoingMessage] = []
    runtime.bus.publish = messages.append
    return messages


@dataclass
class EventFactory:
    """Builds a controller's event stream: seq, ids and clocks filled in."""

    controller_id: str = "laser"
    outbox_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    boot_id: str = "boot-1"
    seq: int = 0
    # An hour ago: within the server's window of plausible wall times.
    wall: float = field(default_factory=lambda: float(int(time.time())) - 3600.0)

    def __call__(self, kind: EventKind, **data: Any) -> Event:
        self.seq += 1
        self.wall += 1.0
        return Event(
            event_id=uuid.uuid4().hex,
            controller_id=self.controller_id,
            outbox_id=self.outbox_id,
            seq=self.seq,
            boot_id=self.boot_id,
            wall_time=self.wall,
            mono_time=1000.0 + self.seq,
            kind=kind,
            data=data,
        )


@pytest.fixture
def events() -> EventFactory:
    return EventFactory()


@pytest.fixture
def lab(runtime: ServerRuntime) -> ServerRuntime:
    """Machine `laser` (controller `laser`, training type `laser`), and people:

    ada (maker, trained autonomous, badge 04A1B2C3), nora (maker, no training, badge
    04FFEE01), tom (trainer of `laser`, no badge), mona (manager), tess (treasurer),
    root (admin).
    """
    bus = runtime.bus
    bus.handle(cmds.AddMachine("laser", "Laser cutter", SITE, key_hex=KEY_HEX))
    bus.handle(
        cmds.AddMember(
            "Ada Lovelace", email="ada@example.org", member_id="ada", password=password_of("ada")
        )
    )
    bus.handle(cmds.RegisterBadge("ada", "04A1B2C3"))
    bus.handle(cmds.GrantTraining("ada", "laser", Level.AUTONOMOUS))
    bus.handle(cmds.AddMember("Nora Newcomer", member_id="nora", password=password_of("nora")))
    bus.handle(cmds.RegisterBadge("nora", "04FFEE01"))
    bus.handle(cmds.AddMember("Tom Trainer", member_id="tom", password=password_of("tom")))
    bus.handle(cmds.GrantTraining("tom", "laser", Level.TRAINER))
    for member_id, role in (("mona", Role.MANAGER), ("tess", Role.TREASURER), ("root", Role.ADMIN)):
        bus.handle(
            cmds.AddMember(member_id.title(), member_id=member_id, password=password_of(member_id))
        )
        bus.handle(cmds.SetRoles(member_id, frozenset({role})))
    return runtime


def password_of(member_id: str) -> str:
    return f"{member_id}-password-123"


Headers = Callable[[str], dict[str, str]]


@pytest.fixture
def auth(lab: ServerRuntime) -> Headers:
    """`auth("mona")`: request headers carrying a fresh API token of that member."""

    def headers(member_id: str) -> dict[str, str]:
        created = lab.bus.handle(cmds.CreateApiToken(member_id, "tests"))
        return {"Authorization": f"Bearer {created.token}"}

    return headers


Ingest = Callable[..., Any]


@pytest.fixture
def ingest(lab: ServerRuntime) -> Ingest:
    """Feed one event (or raw bytes) to ingest on the laser's events topic."""
    from protocol import events_topic

    def feed(event: Event | bytes, topic: str | None = None) -> Any:
        payload = event.encode() if isinstance(event, Event) else event
        return lab.bus.handle(cmds.IngestEvent(topic or events_topic(SITE, "laser"), payload))

    return feed
