"""Commands: what callers (API routes, MQTT ingest, CLI) ask the service layer to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol import Level, Mode
from server.adapters.orm import utcnow


@dataclass(frozen=True)
class OutgoingMessage:
    """An MQTT message to send once the transaction that produced it is committed."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class IngestEvent:
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RecordControllerStatus:
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AddMember:
    name: str
    email: str | None = None
    category: str = "member"
    member_id: str | None = None


@dataclass(frozen=True)
class RegisterBadge:
    member_id: str
    uid: str


@dataclass(frozen=True)
class AddMachine:
    machine_id: str
    name: str
    site: str
    mode: Mode = Mode.TOGGLE
    idle_timeout_s: int = 0
    max_duration_s: int = 0
    heartbeat_interval_s: int = 60
    controller_id: str | None = None
    key_hex: str | None = None


@dataclass(frozen=True)
class GrantTraining:
    member_id: str
    machine_id: str
    level: Level
    granted_by: str | None = None
    expires_at: datetime | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RevokeTraining:
    member_id: str
    machine_id: str
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class PublishConfigs:
    """Sign and publish the config of these machines (all when None)."""

    machine_ids: frozenset[str] | None = None
    at: datetime = field(default_factory=utcnow)


Command = (
    IngestEvent
    | RecordControllerStatus
    | AddMember
    | RegisterBadge
    | AddMachine
    | GrantTraining
    | RevokeTraining
    | PublishConfigs
)
