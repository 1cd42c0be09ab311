"""The controller's pure state machine: badge taps, busy changes, commands and time in,
effects out.

No I/O and no clock: every input carries the Instant it happened at, and the result
is a list of effects (events to record, relay and signal changes, an online badge
check to send, the local service state to keep) that the app applies, events first.

Rules (docs/protocol.md and issue 3):
- modes: *toggle* (tap to start, tap again to end) and *hold* (the badge stays on the
  reader; removal longer than `card_removal_grace_s` ends the session, reason
  `card_removed`). Hold mode needs a reader that senses presence; with another reader
  it behaves as toggle.
- levels: *autonomous* and *trainer* start at once; *supervised* waits up to
  `supervisor_window_s` for the badge of a trainer of the machine or of a staff
  supervisor, else `badge_denied` with `supervisor_missing`. A waiting supervised
  start is decided again whenever the snapshot, the machine's state or the clock
  changes, and when the supervisor taps, with every check of a normal tap (snapshot
  present and not too old, machine in service and free, the member still on the
  snapshot with an unexpired training): the first that fails denies it.
- idle timeout (no busy signal for `idle_timeout_s`) and maximum duration, each warned
  `warning_s` before (session_warning event, WARNING signal).
- out of service (snapshot setting, oops button, server command): every badge is
  refused, except a staff manager's, whose session is a maintenance override.
- a badge not on the snapshot is checked online (auth/request) when the link is up,
  with a timeout; no answer means deny (`auth_timeout`).
- a snapshot older than `snapshot_max_age_s` (when set) grants nothing.
- prepaid members (entry with `prepaid`): a tap is refused (`insufficient_balance`)
  when the snapshot says `may_start` is false or the member's allowance on this
  machine is used up. The allowance counts down on the monotonic clock, from the
  snapshot's `allowance_s` less what the member's sessions used here since that
  snapshot arrived; the session is warned `warning_s` before it runs out and ends
  when it does (`balance_exhausted`). A newer snapshot replaces the count: the server
  built it from the sessions it has, and gives a running session the allowance from
  its start. A manager's maintenance session is never limited.
- every session end has a reason; a session left open by a crash is closed by the
  next run at its last heartbeat (`controller_restart`) and the relay stays off.
- anti-cloning (docs/security.md): a tap carries what the reader found in the badge's
  sector. A sector whose MAC does not verify is denied (`badge_mac_invalid`); a badge
  the snapshot marks `protected` read without its sector is denied
  (`badge_sector_missing`); a plain badge is denied where the lab refuses them
  (`plain_badge_refused`). A granted badge with a sector gets counter + 1 written
  (`WriteBadgeCounter`, answered by `badge_written`) before anything else: only a
  confirmed write starts the session (or the wait for a supervisor), whose
  `session_started` carries the counter; a failed one denies (`badge_write_failed`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from firmware_pi.badge_sector import MAX_COUNTER, SectorRead, SectorStatus
from firmware_pi.clock import Instant
from firmware_pi.signals import Signal
from protocol import (
    DEFAULT_AUTH_TIMEOUT_S,
    AuthRequest,
    AuthResponse,
    Command,
    CommandKind,
    DenyReason,
    EndReason,
    EventKind,
    Level,
    MachineSettings,
    Mode,
    PermissionEntry,
    PermissionSnapshot,
    StaffRole,
    badge_digest,
    normalize_uid,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 60
OOPS_REASON = "oops button"
_DEFAULT_SETTINGS = MachineSettings(name="(no snapshot)")


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


@dataclass(frozen=True)
class SendAuthRequest:
    """Ask the server about a badge the snapshot does not know."""

    request: AuthRequest


@dataclass(frozen=True)
class SetOutOfService:
    """Keep the machine's own out-of-service state (survives restarts)."""

    out_of_service: bool
    reason: str | None


@dataclass(frozen=True)
class WriteBadgeCounter:
    """Write `counter` to the sector of the badge on the reader, then tell the
    controller how it went (`badge_written`); nothing else happens until then."""

    uid: str
    counter: int


@dataclass(frozen=True)
class ProtectBadge:
    """Give the badge being enrolled its anti-cloning sector, then tell the controller
    how it went (`badge_protected`)."""

    uid: str


Effect = (
    EmitEvent | SetRelay | ShowSignal | SendAuthRequest | SetOutOfService | WriteBadgeCounter
    | ProtectBadge
)


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
    maintenance_override: bool = False
    last_card_seen_mono: float = 0.0  # hold mode: when the badge was last on the reader
    idle_since_mono: float = 0.0  # start of the current idle (not busy) period
    idle_warned: bool = False
    max_warned: bool = False
    # Prepaid: seconds this session may run from its start (None: no limit).
    allowance_s: float | None = None
    balance_warned: bool = False

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
        self.idle_since_mono = mono


@dataclass(frozen=True)
class PendingSupervision:
    """A supervised member's tap, waiting for a trainer's or supervisor's badge."""

    uid: str
    entry: PermissionEntry
    deadline_mono: float
    decided_online: bool
    badge_counter: int | None = None  # the anti-cloning counter written at the tap


@dataclass(frozen=True)
class PendingAuth:
    """An online check in flight for a badge the snapshot does not know."""

    request_id: str
    uid: str
    deadline_mono: float
    sector: SectorRead | None = None


@dataclass(frozen=True)
class PendingWrite:
    """A granted tap waiting for its new counter to be written to the badge."""

    uid: str
    counter: int
    entry: PermissionEntry | None
    resume: Callable[[Instant], list[Effect]]


@dataclass(frozen=True)
class Enrolling:
    """After an enroll_badge command: the next badge is reported, not decided."""

    command_id: str
    deadline_mono: float
    uid: str | None = None  # the badge read, while its sector is being written


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Controller:
    """Decides taps from the current permission snapshot and keeps the running session.

    `key` is the controller's HMAC key, under which badges appear in the snapshot.
    """

    key: bytes = field(repr=False)
    snapshot: PermissionSnapshot | None = None
    new_session_id: Callable[[], str] = _new_id
    new_request_id: Callable[[], str] = _new_id
    controller_id: str = "controller"
    snapshot_max_age_s: float = 0.0  # 0 = no limit
    auth_timeout_s: float = DEFAULT_AUTH_TIMEOUT_S  # 0 = no online check
    presence_sensing: bool = True  # the reader tells whether a card lies on it
    local_out_of_service: bool = False
    local_reason: str | None = None
    protect_badges: bool = False  # enrollment writes the anti-cloning sector
    session: Session | None = field(default=None, init=False)
    busy: bool = field(default=False, init=False)
    pending_supervision: PendingSupervision | None = field(default=None, init=False)
    pending_auth: PendingAuth | None = field(default=None, init=False)
    enrolling: Enrolling | None = field(default=None, init=False)
    pending_write: PendingWrite | None = field(default=None, init=False)
    # Prepaid: seconds each member's sessions used here since the snapshot arrived.
    prepaid_used_s: dict[str, float] = field(default_factory=dict, init=False)

    # -- state --------------------------------------------------------------------------

    @property
    def settings(self) -> MachineSettings:
        return self.snapshot.settings if self.snapshot is not None else _DEFAULT_SETTINGS

    @property
    def out_of_service(self) -> bool:
        """Out of service by the snapshot's setting or by the machine's own state."""
        return self.local_out_of_service or self.settings.out_of_service

    @property
    def hold_mode(self) -> bool:
        return self.settings.mode is Mode.HOLD and self.presence_sensing

    def resting_signal(self) -> Signal:
        """What the machine shows when nothing brief is happening."""
        if self.session is not None:
            session = self.session
            warned = session.idle_warned or session.max_warned or session.balance_warned
            return Signal.WARNING if warned else Signal.GRANTED
        if self.enrolling is not None:
            return Signal.ENROLLING
        if self.pending_supervision is not None:
            return Signal.AWAITING_SUPERVISOR
        return Signal.OUT_OF_SERVICE if self.out_of_service else Signal.IDLE

    # -- inputs -------------------------------------------------------------------------

    def set_snapshot(self, snapshot: PermissionSnapshot, now: Instant) -> list[Effect]:
        """Use a newer verified snapshot from now on.

        A running session keeps going on a permission change (it was granted; cutting
        power mid-job is not this rule's call), but ends if the machine is now out of
        service, unless it is a manager's maintenance session.
        """
        self.snapshot = snapshot
        self.prepaid_used_s = {}
        if snapshot.settings.mode is Mode.HOLD and not self.presence_sensing:
            log.warning("hold mode needs a reader that senses cards: behaving as toggle")
        effects = self._recheck_pending(now)
        session = self.session
        if session is not None and not session.maintenance_override:
            self._renew_allowance(session, now)
        if session is not None and self.out_of_service and not session.maintenance_override:
            return effects + self._end_session(EndReason.OUT_OF_SERVICE, now)
        return [*effects, ShowSignal(self.resting_signal())]

    def tap(
        self, uid: str, now: Instant, *, online: bool = False, sector: SectorRead | None = None
    ) -> list[Effect]:
        """A badge was presented to the reader; `online`: the server can be asked;
        `sector`: what the reader found in its anti-cloning sector (None: the reader
        reads no sectors, a plain badge)."""
        uid = normalize_uid(uid)
        session = self.session
        if self.enrolling is not None and (session is None or uid != session.badge_uid):
            return self._enrolled(uid)
        if self.pending_auth is not None or self.pending_write is not None:
            log.info("badge %s ignored: a check or a badge write is in progress", uid)
            return []
        if session is not None:
            if uid == session.badge_uid:
                if self.hold_mode:
                    session.last_card_seen_mono = now.mono
                    return []  # hold mode: taking the card away ends the session
                return self._end_session(EndReason.BADGE, now)
            return self._deny(uid, DenyReason.IN_USE, self._lookup(uid))
        if self.pending_supervision is not None:
            return self._supervisor_tap(uid, now)
        entry = self._lookup(uid)
        refusal = self._machine_refusal(now)
        if refusal is DenyReason.OUT_OF_SERVICE:
            manager = self._staff_member(uid, StaffRole.MANAGER, now)
            if manager is not None:
                return self._checked(uid, entry, sector, now, lambda counter, at: (
                    self._maintenance_session(uid, manager, entry, at, counter)))
        if refusal is not None:
            return self._deny(uid, refusal, entry)
        if entry is None:
            if online and self.auth_timeout_s > 0:
                return self._ask_server(uid, now, sector)
            return self._deny(uid, DenyReason.UNKNOWN_BADGE, None)
        refused = self._entry_refusal(entry, now)
        if refused is not None:
            return self._deny(uid, refused, entry)
        return self._checked(uid, entry, sector, now, lambda counter, at: self._grant(
            uid, entry, at, decided_online=False, badge_counter=counter))

    def badge_written(self, ok: bool, now: Instant) -> list[Effect]:
        """The outcome of the last WriteBadgeCounter: the grant goes on only if it held."""
        pending = self.pending_write
        if pending is None:
            return []
        self.pending_write = None
        if not ok:
            return self._deny(pending.uid, DenyReason.BADGE_WRITE_FAILED, pending.entry)
        return pending.resume(now)

    def badge_protected(self, ok: bool) -> list[Effect]:
        """The outcome of the last ProtectBadge: the enrolled badge is reported."""
        enrolling = self.enrolling
        if enrolling is None or enrolling.uid is None:
            return []
        if not ok:
            log.warning("badge %s: could not write its anti-cloning sector: enrolled plain",
                        enrolling.uid)
        return self._report_enrolled(enrolling.uid, protected=ok)

    def card_present(self, uid: str | None, now: Instant) -> list[Effect]:
        """The reader's view of the card lying on it (hold mode), polled by the app."""
        session = self.session
        if session is not None and uid is not None and uid == session.badge_uid:
            session.last_card_seen_mono = now.mono
        return []

    def set_busy(self, busy: bool, now: Instant) -> list[Effect]:
        """The machine's busy input (current sensor) changed."""
        if busy == self.busy:
            return []
        self.busy = busy
        data: dict[str, Any] = {}
        effects: list[Effect] = []
        session = self.session
        if session is not None:
            data["session_id"] = session.session_id
            if busy:
                session.busy_start(now.mono)
                if session.idle_warned:
                    session.idle_warned = False
                    effects.append(ShowSignal(self.resting_signal()))
            else:
                session.busy_stop(now.mono)
        kind = EventKind.BUSY_STARTED if busy else EventKind.BUSY_ENDED
        return [EmitEvent(kind, data), *effects]

    def tick(self, now: Instant) -> list[Effect]:
        """Time passed: timeouts, warnings and heartbeats."""
        effects: list[Effect] = self._recheck_pending(now)
        if self.pending_auth is not None and now.mono >= self.pending_auth.deadline_mono:
            pending = self.pending_auth
            self.pending_auth = None
            log.warning("no answer to the online check of badge %s in time", pending.uid)
            effects += self._deny(pending.uid, DenyReason.AUTH_TIMEOUT, None)
        supervision = self.pending_supervision
        if supervision is not None and now.mono >= supervision.deadline_mono:
            self.pending_supervision = None
            effects += self._deny(supervision.uid, DenyReason.SUPERVISOR_MISSING,
                                  supervision.entry)
        if self.enrolling is not None and now.mono >= self.enrolling.deadline_mono:
            log.info("enrolment window closed without a badge")
            self.enrolling = None
            effects.append(ShowSignal(self.resting_signal()))
        session = self.session
        if session is None:
            return effects
        settings = self.settings
        if self.hold_mode:
            away = now.mono - session.last_card_seen_mono
            if away >= settings.card_removal_grace_s:
                return effects + self._end_session(EndReason.CARD_REMOVED, now)
        if session.allowance_s is not None:
            left = session.started_mono + session.allowance_s - now.mono
            if left <= 0:
                return effects + self._end_session(EndReason.BALANCE_EXHAUSTED, now)
            if left <= settings.warning_s and not session.balance_warned:
                session.balance_warned = True
                effects += self._warn(session, EndReason.BALANCE_EXHAUSTED, left)
        if settings.max_duration_s > 0:
            left = session.started_mono + settings.max_duration_s - now.mono
            if left <= 0:
                return effects + self._end_session(EndReason.MAX_DURATION, now)
            if left <= settings.warning_s and not session.max_warned:
                session.max_warned = True
                effects += self._warn(session, EndReason.MAX_DURATION, left)
        if settings.idle_timeout_s > 0 and not self.busy:
            left = session.idle_since_mono + settings.idle_timeout_s - now.mono
            if left <= 0:
                return effects + self._end_session(EndReason.IDLE_TIMEOUT, now)
            if left <= settings.warning_s and not session.idle_warned:
                session.idle_warned = True
                effects += self._warn(session, EndReason.IDLE_TIMEOUT, left)
        if now.mono - session.last_heartbeat_mono >= self._heartbeat_interval_s():
            # From now, not from the previous beat: a stalled loop must not emit a burst.
            session.last_heartbeat_mono = now.mono
            effects.append(
                EmitEvent(
                    EventKind.SESSION_HEARTBEAT,
                    {
                        "session_id": session.session_id,
                        "elapsed_seconds": session.elapsed_seconds(now.mono),
                        "busy_seconds": session.busy_seconds(now.mono),
                    },
                )
            )
        return effects

    def oops(self, now: Instant, message: str | None = None) -> list[Effect]:
        """The "oops" button: report the machine broken, end the session, out of service."""
        session = self.session
        already = self.local_out_of_service and self.local_reason == OOPS_REASON
        if already and session is None:
            log.info("oops pressed again: already reported")
            return []
        data: dict[str, Any] = {}
        if session is not None:
            data = {"session_id": session.session_id, "member_id": session.member_id}
        if message:
            data["message"] = message
        log.warning("oops reported%s: machine out of service",
                    f" during session {session.session_id}" if session else "")
        effects: list[Effect] = [EmitEvent(EventKind.OOPS_REPORTED, data)]
        if session is not None:
            effects += self._end_session(EndReason.OOPS, now, signal=False)
        effects += self._cancel_pending(DenyReason.OUT_OF_SERVICE)
        self.local_out_of_service, self.local_reason = True, OOPS_REASON
        effects += [SetOutOfService(True, OOPS_REASON), ShowSignal(Signal.OUT_OF_SERVICE)]
        return effects

    def command(self, command: Command, now: Instant) -> list[Effect]:
        """Carry out a verified server command; every one is confirmed by command_applied."""
        effects: list[Effect] = []
        session = self.session
        message: str | None = None
        if command.kind is CommandKind.LOCK:
            if session is not None:
                message = f"session {session.session_id} ended"
                effects += self._end_session(EndReason.REMOTE_LOCK, now)
            else:
                message = "no session running"
        elif command.kind is CommandKind.OUT_OF_SERVICE:
            if session is not None:
                message = f"session {session.session_id} ended"
                effects += self._end_session(EndReason.OUT_OF_SERVICE, now, signal=False)
            effects += self._cancel_pending(DenyReason.OUT_OF_SERVICE)
            self.local_out_of_service = True
            self.local_reason = command.reason or "server command"
            effects += [SetOutOfService(True, self.local_reason),
                        ShowSignal(self.resting_signal())]
        elif command.kind is CommandKind.BACK_IN_SERVICE:
            self.local_out_of_service, self.local_reason = False, None
            if self.settings.out_of_service:
                message = "the snapshot still says out of service"
            effects += [SetOutOfService(False, None), ShowSignal(self.resting_signal())]
        elif command.kind is CommandKind.ENROLL_BADGE:
            self.enrolling = Enrolling(command.command_id, now.mono + command.enroll_timeout_s)
            effects.append(ShowSignal(Signal.ENROLLING))
        effects += self._recheck_pending(now)
        log.info("command %s (%s) applied", command.command_id, command.kind.value)
        data: dict[str, Any] = {"command_id": command.command_id, "command": command.kind.value}
        if message:
            data["message"] = message
        return [*effects, EmitEvent(EventKind.COMMAND_APPLIED, data)]

    def auth_response(self, response: AuthResponse, now: Instant) -> list[Effect]:
        """The server's (verified) answer to an online check."""
        pending = self.pending_auth
        if pending is None or response.request_id != pending.request_id:
            log.info("auth response %s matches no pending check: ignored", response.request_id)
            return []
        self.pending_auth = None
        uid = pending.uid
        if not response.granted:
            return self._deny(uid, response.reason or DenyReason.UNKNOWN_BADGE, None)
        assert response.member_id is not None and response.level is not None
        entry = PermissionEntry(
            badge_digest(self.key, uid), response.member_id, response.level,
            response.expires_at,
        )
        if self.out_of_service:
            return self._deny(uid, DenyReason.OUT_OF_SERVICE, entry)
        refused = self._entry_refusal(entry, now)
        if refused is not None:
            return self._deny(uid, refused, entry)
        return self._checked(uid, entry, pending.sector, now, lambda counter, at: self._grant(
            uid, entry, at, decided_online=True, badge_counter=counter))

    def stop(self, reason: EndReason, now: Instant) -> list[Effect]:
        """End the running session, if any, for `reason` (e.g. shutdown)."""
        self.pending_auth = None
        self.pending_write = None
        self.pending_supervision = None
        if self.session is None:
            return []
        return self._end_session(reason, now)

    def close_interrupted(
        self,
        *,
        session_id: str,
        last_wall: float,
        elapsed_seconds: float,
        busy_seconds: float,
    ) -> list[Effect]:
        """Close a session a crash or power cut left open, at its last heartbeat.

        The relay stays off: nobody is known to be at the machine any more.
        """
        log.warning("session %s was open at the last stop: closing it at its last heartbeat",
                    session_id)
        return [
            EmitEvent(
                EventKind.SESSION_ENDED,
                {
                    "session_id": session_id,
                    "reason": EndReason.CONTROLLER_RESTART.value,
                    "elapsed_seconds": max(0.0, elapsed_seconds),
                    "busy_seconds": min(max(0.0, busy_seconds), max(0.0, elapsed_seconds)),
                    "ended_wall_time": max(0.0, last_wall),
                },
            ),
            SetRelay(on=False),
        ]

    # -- decisions ----------------------------------------------------------------------

    def _lookup(self, uid: str) -> PermissionEntry | None:
        if self.snapshot is None:
            return None
        return self.snapshot.lookup(badge_digest(self.key, uid))

    def _staff_member(self, uid: str, role: StaffRole, now: Instant) -> str | None:
        """The member id of this badge if it holds staff `role` now."""
        if self.snapshot is None:
            return None
        staff = self.snapshot.lookup_staff(badge_digest(self.key, uid))
        if staff is not None and staff.has(role, now.wall):
            return staff.member_id
        return None

    def _supervisor(self, uid: str, now: Instant) -> str | None:
        """The member id of this badge if it may supervise: a trainer here, or staff."""
        entry = self._lookup(uid)
        if entry is not None and entry.level is Level.TRAINER and (
            entry.expires_at is None or now.wall < entry.expires_at
        ):
            return entry.member_id
        return self._staff_member(uid, StaffRole.SUPERVISOR, now)

    def _badge_refusal(
        self, entry: PermissionEntry | None, sector: SectorRead | None
    ) -> DenyReason | None:
        """Why the badge itself (its anti-cloning sector) is refused, or None."""
        status = SectorStatus.MISSING if sector is None else sector.status
        if status is SectorStatus.MAC_INVALID:
            return DenyReason.BADGE_MAC_INVALID
        if status is SectorStatus.MISSING:
            if entry is not None and entry.protected:
                return DenyReason.BADGE_SECTOR_MISSING
            if not self.settings.plain_badges_allowed:
                return DenyReason.PLAIN_BADGE_REFUSED
        elif sector is not None and (sector.counter or 0) >= MAX_COUNTER:
            return DenyReason.BADGE_WRITE_FAILED  # no counter left to write
        return None

    def _checked(
        self,
        uid: str,
        entry: PermissionEntry | None,
        sector: SectorRead | None,
        now: Instant,
        grant: Callable[[int | None, Instant], list[Effect]],
    ) -> list[Effect]:
        """Deny a refused badge; write counter + 1 to a badge with a sector, then
        `grant(counter, now)` once written (`badge_written`); a plain badge: at once."""
        refusal = self._badge_refusal(entry, sector)
        if refusal is not None:
            return self._deny(uid, refusal, entry)
        if sector is None or sector.counter is None or sector.status is not SectorStatus.VALID:
            return grant(None, now)
        counter = sector.counter + 1
        self.pending_write = PendingWrite(
            uid, counter, entry, lambda at: grant(counter, at)
        )
        return [WriteBadgeCounter(uid, counter)]

    @staticmethod
    def _expired(entry: PermissionEntry, now: Instant) -> bool:
        return entry.expires_at is not None and now.wall >= entry.expires_at

    def _allowance_left(self, entry: PermissionEntry) -> float | None:
        """Seconds a prepaid member may still use here (None: no limit)."""
        if entry.prepaid is None or entry.prepaid.allowance_s is None:
            return None
        return entry.prepaid.allowance_s - self.prepaid_used_s.get(entry.member_id, 0.0)

    def _entry_refusal(self, entry: PermissionEntry, now: Instant) -> DenyReason | None:
        """Why this member may not start now (training lapsed, balance too low), or None."""
        if self._expired(entry, now):
            return DenyReason.TRAINING_EXPIRED
        if entry.prepaid is not None:
            left = self._allowance_left(entry)
            if not entry.prepaid.may_start or (left is not None and left <= 0):
                return DenyReason.INSUFFICIENT_BALANCE
        return None

    def _renew_allowance(self, session: Session, now: Instant) -> None:
        """A new snapshot: the running session's allowance, from its start, is the one
        the server computed without it; a member no longer listed keeps the old one."""
        entry = self._lookup(session.badge_uid)
        if entry is None or entry.member_id != session.member_id:
            return
        prepaid = entry.prepaid
        session.allowance_s = None if prepaid is None else prepaid.allowance_s
        left = None if session.allowance_s is None else (
            session.started_mono + session.allowance_s - now.mono
        )
        if session.balance_warned and (left is None or left > self.settings.warning_s):
            session.balance_warned = False

    def _machine_refusal(self, now: Instant) -> DenyReason | None:
        """Why the machine grants nobody right now (whoever taps), or None."""
        if self.snapshot is None:
            return DenyReason.NO_SNAPSHOT
        if self._snapshot_too_old(now):
            return DenyReason.SNAPSHOT_TOO_OLD
        if self.out_of_service:
            return DenyReason.OUT_OF_SERVICE
        if self.session is not None:
            return DenyReason.IN_USE
        return None

    def _recheck_pending(self, now: Instant) -> list[Effect]:
        """Decide the waiting supervised start again with every check of a tap: deny it
        at the first that fails, else keep waiting (with the member's current entry)."""
        pending = self.pending_supervision
        if pending is None:
            return []
        refusal = self._machine_refusal(now)
        entry = self._lookup(pending.uid)
        if entry is None and pending.decided_online:
            entry = pending.entry  # the server's answer: the snapshot never held it
        if refusal is None:
            if entry is None:
                refusal = DenyReason.UNKNOWN_BADGE
            elif (refused := self._entry_refusal(entry, now)) is not None:
                refusal = refused
            else:
                if entry != pending.entry:
                    self.pending_supervision = replace(pending, entry=entry)
                return []
        self.pending_supervision = None
        log.info("supervised start of badge %s withdrawn: %s", pending.uid, refusal.value)
        return self._deny(pending.uid, refusal, entry or pending.entry)

    def _snapshot_too_old(self, now: Instant) -> bool:
        if self.snapshot is None or self.snapshot_max_age_s <= 0:
            return False
        return now.wall - self.snapshot.issued_at > self.snapshot_max_age_s

    def _heartbeat_interval_s(self) -> float:
        if self.snapshot is None:
            return DEFAULT_HEARTBEAT_INTERVAL_S
        return self.snapshot.settings.heartbeat_interval_s

    def _grant(
        self, uid: str, entry: PermissionEntry, now: Instant, *, decided_online: bool,
        badge_counter: int | None = None,
    ) -> list[Effect]:
        if entry.level is Level.SUPERVISED:
            window = self.settings.supervisor_window_s
            self.pending_supervision = PendingSupervision(
                uid, entry, now.mono + window, decided_online, badge_counter
            )
            log.info("badge %s (supervised): waiting %d s for a supervisor", uid, window)
            return [ShowSignal(Signal.AWAITING_SUPERVISOR)]
        return self._start_session(uid, entry, now, decided_online=decided_online,
                                   badge_counter=badge_counter)

    def _supervisor_tap(self, uid: str, now: Instant) -> list[Effect]:
        withdrawn = self._recheck_pending(now)
        if withdrawn:
            return withdrawn  # the tap that would have confirmed it only shows the denial
        pending = self.pending_supervision
        assert pending is not None
        if uid == pending.uid:
            return []  # the same member again: keep waiting
        supervisor = self._supervisor(uid, now)
        if supervisor is None:
            return self._deny(uid, DenyReason.IN_USE, self._lookup(uid))
        self.pending_supervision = None
        return self._start_session(
            pending.uid, pending.entry, now,
            decided_online=pending.decided_online, supervisor_member_id=supervisor,
            badge_counter=pending.badge_counter,
        )

    def _ask_server(self, uid: str, now: Instant, sector: SectorRead | None) -> list[Effect]:
        request_id = self.new_request_id()
        self.pending_auth = PendingAuth(request_id, uid, now.mono + self.auth_timeout_s, sector)
        log.info("badge %s not on the snapshot: asking the server", uid)
        request = AuthRequest(
            request_id=request_id,
            controller_id=self.controller_id,
            badge_uid=uid,
            wall_time=now.wall,
            snapshot_version=None if self.snapshot is None else self.snapshot.version,
        )
        return [SendAuthRequest(request)]

    def _cancel_pending(self, reason: DenyReason) -> list[Effect]:
        effects: list[Effect] = []
        if self.pending_supervision is not None:
            pending = self.pending_supervision
            self.pending_supervision = None
            effects += self._deny(pending.uid, reason, pending.entry)
        if self.pending_auth is not None:
            uid = self.pending_auth.uid
            self.pending_auth = None
            effects += self._deny(uid, reason, None)
        return effects

    # -- effects ------------------------------------------------------------------------

    def _deny(self, uid: str, reason: DenyReason, entry: PermissionEntry | None) -> list[Effect]:
        data: dict[str, Any] = {"badge_uid": uid, "reason": reason.value}
        if entry is not None:
            data["member_id"] = entry.member_id
        log.info("badge %s denied: %s", uid, reason.value)
        return [EmitEvent(EventKind.BADGE_DENIED, data), ShowSignal(Signal.DENIED)]

    def _enrolled(self, uid: str) -> list[Effect]:
        enrolling = self.enrolling
        assert enrolling is not None
        log.info("badge %s read for enrolment (command %s)", uid, enrolling.command_id)
        if self.protect_badges:
            self.enrolling = replace(enrolling, uid=uid)
            return [ProtectBadge(uid)]
        return self._report_enrolled(uid, protected=False)

    def _report_enrolled(self, uid: str, *, protected: bool) -> list[Effect]:
        enrolling = self.enrolling
        assert enrolling is not None
        self.enrolling = None
        data: dict[str, Any] = {"badge_uid": uid, "command_id": enrolling.command_id}
        if protected:
            data["protected"] = True
        return [
            EmitEvent(EventKind.BADGE_ENROLLED, data),
            ShowSignal(Signal.ENROLLED),
            ShowSignal(self.resting_signal()),
        ]

    def _warn(self, session: Session, reason: EndReason, left: float) -> list[Effect]:
        log.info("session %s: %s in %.0f s", session.session_id, reason.value, left)
        return [
            EmitEvent(
                EventKind.SESSION_WARNING,
                {
                    "session_id": session.session_id,
                    "reason": reason.value,
                    "ends_in_seconds": round(max(0.0, left), 3),
                },
            ),
            ShowSignal(Signal.WARNING),
        ]

    def _maintenance_session(
        self, uid: str, manager_id: str, entry: PermissionEntry | None, now: Instant,
        badge_counter: int | None,
    ) -> list[Effect]:
        level = entry.level if entry is not None else Level.TRAINER
        maintenance = PermissionEntry(badge_digest(self.key, uid), manager_id, level)
        log.warning("manager %s overrides out-of-service for maintenance", manager_id)
        return self._start_session(uid, maintenance, now, decided_online=False,
                                   maintenance_override=True, badge_counter=badge_counter)

    def _start_session(
        self,
        uid: str,
        entry: PermissionEntry,
        now: Instant,
        *,
        decided_online: bool,
        supervisor_member_id: str | None = None,
        maintenance_override: bool = False,
        badge_counter: int | None = None,
    ) -> list[Effect]:
        version = self.snapshot.version if self.snapshot is not None else 0
        session = Session(
            session_id=self.new_session_id(),
            member_id=entry.member_id,
            badge_uid=uid,
            level=entry.level,
            snapshot_version=version,
            started_mono=now.mono,
            last_heartbeat_mono=now.mono,
            maintenance_override=maintenance_override,
            last_card_seen_mono=now.mono,
            idle_since_mono=now.mono,
            allowance_s=None if maintenance_override else self._allowance_left(entry),
        )
        if self.busy:
            session.busy_start(now.mono)
        self.session = session
        data: dict[str, Any] = {
            "session_id": session.session_id,
            "badge_uid": uid,
            "member_id": entry.member_id,
            "level": entry.level.value,
            "snapshot_version": version,
        }
        if supervisor_member_id is not None:
            data["supervisor_member_id"] = supervisor_member_id
        if maintenance_override:
            data["maintenance_override"] = True
        if decided_online:
            data["decided_online"] = True
        if badge_counter is not None:
            data["badge_counter"] = badge_counter
        log.info("session %s started by member %s", session.session_id, entry.member_id)
        return [
            EmitEvent(EventKind.SESSION_STARTED, data),
            SetRelay(on=True),
            ShowSignal(Signal.GRANTED),
        ]

    def _end_session(self, reason: EndReason, now: Instant, *, signal: bool = True) -> list[Effect]:
        session = self.session
        assert session is not None
        session.busy_stop(now.mono)
        self.session = None
        if not session.maintenance_override:
            used = self.prepaid_used_s.get(session.member_id, 0.0)
            self.prepaid_used_s[session.member_id] = used + session.elapsed_seconds(now.mono)
        log.info("session %s ended: %s", session.session_id, reason.value)
        effects: list[Effect] = [
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
        ]
        if signal:
            effects.append(ShowSignal(self.resting_signal()))
        return effects
