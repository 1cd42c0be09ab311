"""Controller → server events, server → controller acks, and controller status."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from protocol import _fields as f
from protocol.commands import CommandKind
from protocol.errors import ProtocolError

SCHEMA_VERSION = 1

# Absolute sanity bounds: a value beyond them is refused when decoding, whatever the
# server's own, narrower, checks (window around its clock, the session's real span).
MAX_SEQ = f.MAX_INT  # seqs fit a signed 64-bit column
MAX_WALL_TIME = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_MONO_TIME = 1e10  # seconds since boot: over 300 years
MAX_DURATION_S = 366 * 86400.0  # no session, busy period or warning lasts a year
# Per data field name: the largest value a float field may take.
FLOAT_MAXIMUM: dict[str, float] = {
    "elapsed_seconds": MAX_DURATION_S,
    "busy_seconds": MAX_DURATION_S,
    "ends_in_seconds": MAX_DURATION_S,
    "ended_wall_time": MAX_WALL_TIME,
}


class EventKind(StrEnum):
    BADGE_DENIED = "badge_denied"
    SESSION_STARTED = "session_started"
    SESSION_HEARTBEAT = "session_heartbeat"
    BUSY_STARTED = "busy_started"
    BUSY_ENDED = "busy_ended"
    SESSION_ENDED = "session_ended"
    OOPS_REPORTED = "oops_reported"
    FAULT = "fault"
    SESSION_WARNING = "session_warning"  # the session will end soon (idle / max duration)
    COMMAND_APPLIED = "command_applied"  # a signed server command was carried out
    BADGE_ENROLLED = "badge_enrolled"  # the badge read after an enroll_badge command


class Level(StrEnum):
    """What a member may do on a machine, in increasing order of trust."""

    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"
    TRAINER = "trainer"


class DenyReason(StrEnum):
    UNKNOWN_BADGE = "unknown_badge"
    NOT_TRAINED = "not_trained"
    TRAINING_EXPIRED = "training_expired"
    OUT_OF_SERVICE = "out_of_service"
    NO_SNAPSHOT = "no_snapshot"
    IN_USE = "in_use"
    SUPERVISOR_MISSING = "supervisor_missing"
    SNAPSHOT_TOO_OLD = "snapshot_too_old"  # the snapshot is past the controller's max age
    AUTH_TIMEOUT = "auth_timeout"  # unknown badge, the online check got no answer in time
    # Anti-cloning (MIFARE Classic sector, docs/security.md):
    BADGE_MAC_INVALID = "badge_mac_invalid"  # the badge's sector MAC does not verify
    BADGE_SECTOR_MISSING = "badge_sector_missing"  # a protected badge read without its sector
    PLAIN_BADGE_REFUSED = "plain_badge_refused"  # a plain badge where the lab refuses them
    BADGE_WRITE_FAILED = "badge_write_failed"  # the new counter could not be written
    # A prepaid member whose balance is below the category's threshold (or whose
    # allowance on this machine is used up).
    INSUFFICIENT_BALANCE = "insufficient_balance"


class EndReason(StrEnum):
    BADGE = "badge"
    CARD_REMOVED = "card_removed"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    REMOTE_LOCK = "remote_lock"
    OUT_OF_SERVICE = "out_of_service"
    OOPS = "oops"
    CONTROLLER_RESTART = "controller_restart"
    SHUTDOWN = "shutdown"
    PERMISSION_REVOKED = "permission_revoked"
    BALANCE_EXHAUSTED = "balance_exhausted"  # a prepaid member's allowance ran out


class ControllerState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


# Per kind: field name -> (type, required). Types are str, int, float, bool or an Enum class.
_DATA_SCHEMA: dict[EventKind, dict[str, tuple[Any, bool]]] = {
    EventKind.BADGE_DENIED: {
        "badge_uid": (str, True),
        "reason": (DenyReason, True),
        "member_id": (str, False),
    },
    EventKind.SESSION_STARTED: {
        "session_id": (str, True),
        "badge_uid": (str, True),
        "member_id": (str, True),
        "level": (Level, True),
        "snapshot_version": (int, True),
        # The trainer or supervisor whose badge confirmed a `supervised` member.
        "supervisor_member_id": (str, False),
        # True: a manager switched an out-of-service machine on for maintenance.
        "maintenance_override": (bool, False),
        # True: granted by the server's answer to auth/request, not from the snapshot.
        "decided_online": (bool, False),
        # The anti-cloning counter written to the badge's sector before the relay moved;
        # absent for a plain badge.
        "badge_counter": (int, False),
    },
    EventKind.SESSION_HEARTBEAT: {
        "session_id": (str, True),
        "elapsed_seconds": (float, True),
        "busy_seconds": (float, True),
    },
    EventKind.BUSY_STARTED: {"session_id": (str, False)},
    EventKind.BUSY_ENDED: {"session_id": (str, False)},
    EventKind.SESSION_ENDED: {
        "session_id": (str, True),
        "reason": (EndReason, True),
        "elapsed_seconds": (float, True),
        "busy_seconds": (float, True),
        # Set when the end is known only afterwards (controller restart): the wall time
        # of the last heartbeat, which is when the session is closed.
        "ended_wall_time": (float, False),
    },
    EventKind.OOPS_REPORTED: {
        "session_id": (str, False),
        "member_id": (str, False),
        "message": (str, False),
    },
    EventKind.FAULT: {"code": (str, True), "message": (str, True)},
    EventKind.SESSION_WARNING: {
        "session_id": (str, True),
        "reason": (EndReason, True),  # idle_timeout, max_duration or balance_exhausted
        "ends_in_seconds": (float, True),
    },
    EventKind.COMMAND_APPLIED: {
        "command_id": (str, True),
        "command": (CommandKind, True),
        "message": (str, False),
    },
    EventKind.BADGE_ENROLLED: {
        "badge_uid": (str, True),
        "command_id": (str, True),
        # True: the controller wrote the anti-cloning sector (counter 0) to the badge.
        "protected": (bool, False),
    },
}


def _read_value(data: dict[str, Any], name: str, kind: Any, prefix: str) -> Any:
    if kind is str:
        return f.req_str(data, name, prefix, max_len=500)
    if kind is int:
        return f.req_int(data, name, prefix)
    if kind is float:
        return f.req_float(data, name, prefix, maximum=FLOAT_MAXIMUM.get(name, math.inf))
    if kind is bool:
        return f.req_bool(data, name, prefix)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return f.req_enum(data, name, kind, prefix).value
    raise TypeError(kind)  # pragma: no cover - schema table bug


def validate_event_data(kind: EventKind, data: dict[str, Any]) -> dict[str, Any]:
    """Check one event's data against its kind's schema; returns a cleaned copy."""
    schema = _DATA_SCHEMA[kind]
    unknown = set(data) - set(schema)
    if unknown:
        raise ProtocolError(f"data.{sorted(unknown)[0]}", f"unknown field for {kind.value}")
    clean: dict[str, Any] = {}
    for name, (kind_of, required) in schema.items():
        if data.get(name) is None:
            if required:
                raise ProtocolError(f"data.{name}", "is required")
            continue
        clean[name] = _read_value(data, name, kind_of, "data.")
    return clean


_KIND_OF: dict[str, EventKind] = {kind.value: kind for kind in EventKind}
_ENVELOPE_STRINGS = ("event_id", "controller_id", "outbox_id")


def _plain_value(value: Any, kind: Any, maximum: float) -> Any:
    """A data value in its common form (the value `_read_value` would return), else
    `_SLOW`: the full readers then decide, with their error messages."""
    if kind is str:
        return value if value.__class__ is str and 0 < len(value) <= 500 else _SLOW
    if kind is float:
        ok = value.__class__ is float and 0.0 <= value <= maximum
        return value if ok else _SLOW
    if kind is int:
        return value if value.__class__ is int and 0 <= value <= f.MAX_INT else _SLOW
    if kind is bool:
        return value if value.__class__ is bool else _SLOW
    member = kind._value2member_map_.get(value) if value.__class__ is str else None
    return member.value if member is not None else _SLOW


_SLOW: Any = object()
# Per kind: (name, type, required, float maximum) of each data field, in schema order
# (a finite maximum: the fast path's bound check also refuses infinities).
_DATA_FIELDS = {
    kind: tuple((name, of, required, FLOAT_MAXIMUM.get(name, sys.float_info.max))
                for name, (of, required) in schema.items())
    for kind, schema in _DATA_SCHEMA.items()
}  # fmt: skip


def _decode_common(d: dict[str, Any]) -> tuple[Any, ...] | None:
    """An event's fields, in `Event` order, when each is in its common form (a string,
    an integer or a float within bounds, a known kind, known data fields); None sends
    the event to the field-by-field readers, which give the same values or the error.
    Ingest decodes thousands of events a second: this is its fast path."""
    if d.get("schema_version") != SCHEMA_VERSION or d["schema_version"].__class__ is not int:
        return None
    name = d.get("kind")
    kind = _KIND_OF.get(name) if isinstance(name, str) else None
    data = d.get("data")
    if kind is None or data.__class__ is not dict:
        return None
    for name in _ENVELOPE_STRINGS:
        value = d.get(name)
        if value.__class__ is not str or not 0 < len(value) <= 64:
            return None
    boot_id, seq = d.get("boot_id"), d.get("seq")
    wall_time, mono_time = d.get("wall_time"), d.get("mono_time")
    if not (
        boot_id.__class__ is str and 0 < len(boot_id) <= 64
        and seq.__class__ is int and 1 <= seq <= MAX_SEQ
        and wall_time.__class__ is float and 0.0 <= wall_time <= MAX_WALL_TIME
        and mono_time.__class__ is float and 0.0 <= mono_time <= MAX_MONO_TIME
    ):  # fmt: skip
        return None
    clean = _plain_data(kind, data)
    if clean is None:
        return None
    return (d["event_id"], d["controller_id"], d["outbox_id"], seq, boot_id, wall_time,
            mono_time, kind, clean)  # fmt: skip


def _plain_data(kind: EventKind, data: dict[str, Any]) -> dict[str, Any] | None:
    """`validate_event_data`'s result when every field is in its common form, else None."""
    fields = _DATA_FIELDS[kind]
    clean: dict[str, Any] = {}
    known = 0
    for name, of, required, maximum in fields:
        value = data.get(name)
        if value is None:
            if required:
                return None
            known += name in data  # an explicit null: dropped, as the readers do
            continue
        known += 1
        value = _plain_value(value, of, maximum)
        if value is _SLOW:
            return None
        clean[name] = value
    return clean if known == len(data) else None  # else an unknown field


@dataclass(frozen=True)
class Event:
    """One controller event; (controller_id, outbox_id, seq) and event_id are both unique."""

    event_id: str
    controller_id: str
    outbox_id: str
    seq: int
    boot_id: str
    wall_time: float
    mono_time: float
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return f.dump(
            {
                "schema_version": self.schema_version,
                "event_id": self.event_id,
                "controller_id": self.controller_id,
                "outbox_id": self.outbox_id,
                "seq": self.seq,
                "boot_id": self.boot_id,
                "wall_time": self.wall_time,
                "mono_time": self.mono_time,
                "kind": self.kind.value,
                "data": self.data,
            }
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> Event:
        d = f.load_object(payload, "event")
        fast = _decode_common(d)
        return cls(*fast) if fast is not None else cls.read_fields(d)

    @classmethod
    def read_fields(cls, d: dict[str, Any]) -> Event:
        """The event of a decoded JSON object, field by field; ProtocolError names the
        first field that is wrong."""
        f.check_schema_version(d, SCHEMA_VERSION)
        kind = f.req_enum(d, "kind", EventKind)
        return cls(
            event_id=f.req_str(d, "event_id", max_len=64),
            controller_id=f.req_str(d, "controller_id", max_len=64),
            outbox_id=f.req_str(d, "outbox_id", max_len=64),
            seq=f.req_int(d, "seq", minimum=1, maximum=MAX_SEQ),
            boot_id=f.req_str(d, "boot_id", max_len=64),
            wall_time=f.req_float(d, "wall_time", maximum=MAX_WALL_TIME),
            mono_time=f.req_float(d, "mono_time", maximum=MAX_MONO_TIME),
            kind=kind,
            data=validate_event_data(kind, f.req_object(d, "data")),
        )


@dataclass(frozen=True)
class EventEnvelope:
    """The stream position of an event whose body may be invalid: enough to ack it.

    `event_id` is the payload's event id when it is a readable string, else None: it
    tells a replay of a seq from another event claiming the same seq.
    """

    controller_id: str
    outbox_id: str
    seq: int
    event_id: str | None = None

    @classmethod
    def read(cls, payload: bytes | str) -> EventEnvelope:
        """Read only the envelope fields; ProtocolError names the unreadable one."""
        d = f.load_object(payload, "event")
        event_id = d.get("event_id")
        readable_id = isinstance(event_id, str) and 0 < len(event_id) <= 64
        return cls(
            controller_id=f.req_str(d, "controller_id", max_len=64),
            outbox_id=f.req_str(d, "outbox_id", max_len=64),
            seq=f.req_int(d, "seq", minimum=1, maximum=MAX_SEQ),
            event_id=event_id if readable_id else None,
        )

    @classmethod
    def peek(cls, payload: bytes | str) -> EventEnvelope | None:
        """Read only the envelope fields; None when even those are unreadable."""
        try:
            return cls.read(payload)
        except ProtocolError:
            return None


@dataclass(frozen=True)
class Ack:
    """Server → controller: every event of this outbox up to `up_to_seq` is committed.

    `rejected` lists the seqs among them that failed validation: they are kept by the
    server as rejected events and must not be sent again.

    `conflicts` lists seqs of this outbox that the server already holds under a
    *different* event id (an outbox restored from a backup, or another publisher on
    the stream). They are never covered by `up_to_seq`; a controller that sees one, or
    an `up_to_seq` beyond the last seq it issued, starts a new outbox stream for its
    unacknowledged events instead of deleting them.
    """

    controller_id: str
    outbox_id: str
    up_to_seq: int
    rejected: tuple[int, ...] = ()
    conflicts: tuple[int, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return f.dump(
            {
                "schema_version": self.schema_version,
                "controller_id": self.controller_id,
                "outbox_id": self.outbox_id,
                "up_to_seq": self.up_to_seq,
                "rejected": list(self.rejected),
                "conflicts": list(self.conflicts),
            }
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> Ack:
        d = f.load_object(payload, "ack")
        f.check_schema_version(d, SCHEMA_VERSION)
        rejected = _seq_list(f.req_list(d, "rejected"), "rejected")
        # Optional: acks from servers before it was introduced carry no conflicts.
        conflicts = _seq_list(d.get("conflicts") or [], "conflicts")
        return cls(
            controller_id=f.req_str(d, "controller_id", max_len=64),
            outbox_id=f.req_str(d, "outbox_id", max_len=64),
            up_to_seq=f.req_int(d, "up_to_seq", maximum=MAX_SEQ),
            rejected=rejected,
            conflicts=conflicts,
        )


def _seq_list(values: Any, name: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SEQ for s in values
    ):
        raise ProtocolError(name, f"must be a list of integers from 1 to {MAX_SEQ}")
    return tuple(values)


@dataclass(frozen=True)
class ControllerStatus:
    """Retained `status`: the birth message and, as last will, the `offline` one."""

    controller_id: str
    state: ControllerState
    firmware_version: str
    boot_id: str
    wall_time: float
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return f.dump(
            {
                "schema_version": self.schema_version,
                "controller_id": self.controller_id,
                "state": self.state.value,
                "firmware_version": self.firmware_version,
                "boot_id": self.boot_id,
                "wall_time": self.wall_time,
            }
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> ControllerStatus:
        d = f.load_object(payload, "status")
        f.check_schema_version(d, SCHEMA_VERSION)
        return cls(
            controller_id=f.req_str(d, "controller_id", max_len=64),
            state=f.req_enum(d, "state", ControllerState),
            firmware_version=f.req_str(d, "firmware_version", max_len=64),
            boot_id=f.req_str(d, "boot_id", max_len=64),
            wall_time=f.req_float(d, "wall_time"),
        )
