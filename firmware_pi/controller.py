"""The controller's pure state machine: badge taps, busy changes and time in, effects out.

No I/O and no clock: every input carries the Instant it happened at, and the result
is a list of effects (events to record, relay and signal changes) that the app
applies, events first. Only toggle mode exists yet; hold mode, levels, idle timeout,
maximum duration and remote commands are further inputs and checks on the same
Session / Controller pair.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_pi.clock import Instant
from firmware_pi.signals import Signal
from protocol import (
    DenyReason,
    EndReason,
    EventKind,
    Level,
    PermissionEntry,
    PermissionSnapshot,
    badge_digest,
    normalize_uid,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 60


@dataclass(frozen=True)
class EmitEvent:
    """Record an event (`data` follows protocol's schema for `kind`)."""

    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True)
class SetRelay:
    """Switch the tool's power."""

    on: bool


@dataclass(frozen=True)
class ShowSignal:
    """Tell the people at the machine what happened."""

    signal: Signal


Effect = EmitEvent | SetRelay | ShowSignal


@dataclass
class Session:
    """One member's use of the machine, timed on the monotonic clock."""

    session_id: str
    member_id: str
    badge_uid: str
    level: Level
    snapshot_version: int
    started_mono: float
    last_heartbeat_mono: float
    busy_seconds_closed: float = 0.0  # busy periods that have ended
    busy_since_mono: float | None = None  # start of the running busy period

    def elapsed_seconds(self, mono: float) -> float:
        return round(max(0.0, mono - self.started_mono), 3)

    def busy_seconds(self, mono: float) -> float:
        running = 0.0 if self.busy_since_mono is None else max(0.0, mono - self.busy_since_mono)
        # Busy time can never exceed the session's own time, whatever the inputs did.
        return min(round(self.busy_seconds_closed + running, 3), self.elapsed_seconds(mono))

    def busy_start(self, mono: float) -> None:
        if self.busy_since_mono is None:
            self.busy_since_mono = mono

    def busy_stop(self, mono: float) -> None:
        if self.busy_since_mono is not None:
            self.busy_seconds_closed += max(0.0, mono - self.busy_since_mono)
            self.busy_since_mono = None


def _new_session_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Controller:
    """Decides taps from the current permission snapshot and keeps the running session.

    `key` is the controller's HMAC key, under which badges appear in the snapshot.
    """

    key: bytes = field(repr=False)
    snapshot: PermissionSnapshot | None = None
    new_session_id: Callable[[], str] = _new_session_id
    session: Session | None = field(default=None, init=False)
    busy: bool = field(default=False, init=False)

    # -- inputs -------------------------------------------------------------------------

    def set_snapshot(self, snapshot: PermissionSnapshot, now: Instant) -> list[Effect]:
        """Use a newer verified snapshot from now on.

        A running session keeps going: it was granted, and cutting a tool's power
        mid-job on a permission change is a decision for a later rule.
        """
        self.snapshot = snapshot
        return []

    def tap(self, uid: str, now: Instant) -> list[Effect]:
        """A badge was presented to the reader."""
        uid = normalize_uid(uid)
        if self.session is not None:
            if uid == self.session.badge_uid:
                return self._end_session(EndReason.BADGE, now)
            entry = self._lookup(uid)
            return self._deny(uid, DenyReason.IN_USE, entry)
        if self.snapshot is None:
            return self._deny(uid, DenyReason.NO_SNAPSHOT, None)
        entry = self._lookup(uid)
        reason = self._refusal(entry, now)
        if reason is not None:
            return self._deny(uid, reason, entry)
        assert entry is not None  # _refusal refuses unknown badges
        return self._start_session(uid, entry, now)

    def set_busy(self, busy: bool, now: Instant) -> list[Effect]:
        """The machine's busy input (current sensor) changed."""
        if busy == self.busy:
            return []
        self.busy = busy
        data: dict[str, Any] = {}
        if self.session is not None:
            data["session_id"] = self.session.session_id
            if busy:
                self.session.busy_start(now.mono)
            else:
                self.session.busy_stop(now.mono)
        kind = EventKind.BUSY_STARTED if busy else EventKind.BUSY_ENDED
        return [EmitEvent(kind, data)]

    def tick(self, now: Instant) -> list[Effect]:
        """Time passed: heartbeats for the running session."""
        session = self.session
        if session is None:
            return []
        if now.mono - session.last_heartbeat_mono < self._heartbeat_interval_s():
            return []
        # From now, not from the previous beat: a stalled loop must not emit a burst.
        session.last_heartbeat_mono = now.mono
        return [
            EmitEvent(
                EventKind.SESSION_HEARTBEAT,
                {
                    "session_id": session.session_id,
                    "elapsed_seconds": session.elapsed_seconds(now.mono),
                    "busy_seconds": session.busy_seconds(now.mono),
                },
            )
        ]

    def stop(self, reason: EndReason, now: Instant) -> list[Effect]:
        """End the running session, if any, for `reason` (e.g. shutdown)."""
        if self.session is None:
            return []
        return self._end_session(reason, now)

    # -- decisions ----------------------------------------------------------------------

    def _lookup(self, uid: str) -> PermissionEntry | None:
        if self.snapshot is None:
            return None
        return self.snapshot.lookup(badge_digest(self.key, uid))

    def _refusal(self, entry: PermissionEntry | None, now: Instant) -> DenyReason | None:
        """Why this badge may not start a session now; None when it may."""
        assert self.snapshot is not None
        if self.snapshot.settings.out_of_service:
            return DenyReason.OUT_OF_SERVICE
        if entry is None:
            return DenyReason.UNKNOWN_BADGE
        if entry.expires_at is not None and now.wall >= entry.expires_at:
            return DenyReason.TRAINING_EXPIRED
        return None

    def _heartbeat_interval_s(self) -> float:
        if self.snapshot is None:
            return DEFAULT_HEARTBEAT_INTERVAL_S
        return self.snapshot.settings.heartbeat_interval_s

    # -- effects ------------------------------------------------------------------------

    def _deny(self, uid: str, reason: DenyReason, entry: PermissionEntry | None) -> list[Effect]:
        data: dict[str, Any] = {"badge_uid": uid, "reason": reason.value}
        if entry is not None:
            data["member_id"] = entry.member_id
        log.info("badge %s denied: %s", uid, reason.value)
        return [EmitEvent(EventKind.BADGE_DENIED, data), ShowSignal(Signal.DENIED)]

    def _start_session(self, uid: str, entry: PermissionEntry, now: Instant) -> list[Effect]:
        assert self.snapshot is not None
        session = Session(
            session_id=self.new_session_id(),
            member_id=entry.member_id,
            badge_uid=uid,
            level=entry.level,
            snapshot_version=self.snapshot.version,
            started_mono=now.mono,
            last_heartbeat_mono=now.mono,
        )
        if self.busy:
            session.busy_start(now.mono)
        self.session = session
        log.info("session %s started by member %s", session.session_id, entry.member_id)
        return [
            EmitEvent(
                EventKind.SESSION_STARTED,
                {
                    "session_id": session.session_id,
                    "badge_uid": uid,
                    "member_id": entry.member_id,
                    "level": entry.level.value,
                    "snapshot_version": session.snapshot_version,
                },
            ),
            SetRelay(on=True),
            ShowSignal(Signal.GRANTED),
        ]

    def _end_session(self, reason: EndReason, now: Instant) -> list[Effect]:
        session = self.session
        assert session is not None
        session.busy_stop(now.mono)
        self.session = None
        log.info("session %s ended: %s", session.session_id, reason.value)
        return [
            EmitEvent(
                EventKind.SESSION_ENDED,
                {
                    "session_id": session.session_id,
                    "reason": reason.value,
                    "elapsed_seconds": session.elapsed_seconds(now.mono),
                    "busy_seconds": session.busy_seconds(now.mono),
                },
            ),
            SetRelay(on=False),
            ShowSignal(Signal.IDLE),
        ]
