"""What controller events and status messages do to the lab's state.

Storing events idempotently, in batches, and acknowledging them is `ingest_batch`'s
part; this module holds the per-event rules it applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any

from protocol import (
    ControllerState,
    ControllerStatus,
    Event,
    EventKind,
    ProtocolError,
    TopicAddress,
    parse_topic,
)
from server.adapters.orm import (
    BadgeDenial,
    Controller,
    ControllerCommand,
    ControllerFault,
    Enrollment,
    UsageSession,
)
from server.domain.ingest_rules import (
    Plausibility,
    duration_problem,
    owns_session,
    progress_wall_time,
    session_span,
    wall_time_problem,
)
from server.service_layer import prepaid
from server.service_layer.audit import record
from server.service_layer.badge_counters import apply_badge_event
from server.service_layer.commands import RecordControllerStatus, RecordControllerStatuses
from server.service_layer.configs import machines_sharing_lapse
from server.service_layer.controller_commands import mark_applied, resend
from server.service_layer.members import complete_enrollment
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

_STORED_PAYLOAD_LIMIT = 64 * 1024


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # stored as rejected and acknowledged: the controller drops it
    CONFLICT = "conflict"  # another event holds its seq: stored, flagged, never acked
    UNREADABLE = "unreadable"  # no envelope to acknowledge: stored, not acked
    UNKNOWN_CONTROLLER = "unknown_controller"
    BAD_TOPIC = "bad_topic"


@dataclass(frozen=True)
class IngestOutcome:
    outcome: Outcome
    error: str | None = None
    acked_seq: int | None = None
    # Why an event was stored as rejected, as a short label (metrics): bad_topic,
    # unreadable, unknown_controller, invalid, refused, could_not_apply.
    reason: str | None = None


class EventRefusedError(Exception):
    """A well-formed event that the server will not apply (stored as rejected)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def as_text(payload: bytes) -> str:
    """The payload as stored (bounded, undecodable bytes replaced)."""
    return payload[:_STORED_PAYLOAD_LIMIT].decode("utf-8", errors="replace")


def _wall(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _dated_by_start(uow: SqlAlchemyUnitOfWork, event: Event) -> bool:
    """Is this a heartbeat or an end of a session started in the same boot? Its time is
    then the start plus its monotonic elapsed time, and its own wall time is unused."""
    if event.kind not in (EventKind.SESSION_HEARTBEAT, EventKind.SESSION_ENDED):
        return False
    if "ended_wall_time" in event.data:
        return False
    usage = uow.sessions.get(event.data["session_id"])
    return (
        usage is not None
        and usage.started_mono_time is not None
        and usage.boot_id == event.boot_id
        and usage.controller_id == event.controller_id
    )


def _check_wall_times(
    event: Event, received_at: datetime, limits: Plausibility, *, dated_by_start: bool
) -> None:
    """Refuse wall times outside the window around the server's clock (except the
    unused wall time of an event dated from its session's start)."""
    now = received_at.timestamp()
    times = [] if dated_by_start else [("wall_time", event.wall_time)]
    if "ended_wall_time" in event.data:
        times.append(("data.ended_wall_time", event.data["ended_wall_time"]))
    for name, value in times:
        problem = wall_time_problem(value, now, limits)
        if problem:
            raise ProtocolError(name, problem)


def check_event(
    uow: SqlAlchemyUnitOfWork, event: Event, received_at: datetime, limits: Plausibility
) -> None:
    """Refuse (ProtocolError) an event whose wall times are implausible at receipt."""
    _check_wall_times(event, received_at, limits, dated_by_start=_dated_by_start(uow, event))


def prefetch(uow: SqlAlchemyUnitOfWork, events: list[tuple[Controller, Event, datetime]]) -> None:
    """Make, before a batch writes anything, the per-transaction reads (`memo_read`) its
    events will make: each query then runs once on a clean session, instead of first
    flushing the batch's pending changes (SQLAlchemy's autoflush) part way through.
    The same keys, the same answers: they are reads the batch's writes cannot change
    (or whose key the writer drops), and each is made at the receipt time of the
    first event that asks it."""
    _preload_session_starts(uow, [(event, c.machine_id) for c, event, _ in events])
    for controller, event, received_at in events:
        machine_id, data = controller.machine_id, event.data
        if event.kind in (EventKind.BADGE_DENIED, EventKind.BADGE_ENROLLED):
            key = ("enrollment pending", machine_id)
            if key not in uow.memo:
                uow.memo[key] = uow.enrollments.pending(machine_id, received_at) is not None
        if event.kind is EventKind.BADGE_DENIED:
            uow.memo_read(("badge holder", data["badge_uid"]), partial(_holder, uow, data))
        if event.kind in (EventKind.SESSION_STARTED, EventKind.SESSION_ENDED):
            prepaid.prefetch(uow)


def apply_event(
    uow: SqlAlchemyUnitOfWork,
    controller: Controller,
    event: Event,
    received_at: datetime,
    limits: Plausibility,
) -> None:
    """What one new event does to the lab's state (sessions, denials, faults, …).

    This is where per-event domain checks belong. A refusal (EventRefusedError) must be
    raised before the event has changed anything: ingest applies the common kinds of a
    batch without a savepoint per event (see `ingest_batch.APPLIED_IN_SAVEPOINT`).
    """
    data = event.data
    kind = event.kind
    if kind is EventKind.BADGE_DENIED:
        _badge_denied(uow, controller, event, received_at)
    elif kind is EventKind.SESSION_STARTED:
        _session_started(uow, controller, event)
    elif kind in (EventKind.SESSION_HEARTBEAT, EventKind.SESSION_ENDED):
        _session_progress(uow, controller, event, received_at, limits)
    elif kind is EventKind.BADGE_ENROLLED:
        enrolled = _enroll_if_pending(uow, controller.machine_id, data["badge_uid"], received_at)
        if enrolled is None:
            logger.warning("badge %s read for enrollment, none pending", data["badge_uid"])
    elif kind is EventKind.OOPS_REPORTED:
        _oops(uow, controller, event, received_at)
    elif kind is EventKind.COMMAND_APPLIED:
        if not mark_applied(uow, data["command_id"], received_at, data.get("message")):
            logger.warning("controller %s applied unknown command %s", controller.id, data)
    elif kind in (EventKind.BUSY_STARTED, EventKind.BUSY_ENDED):
        usage = (
            _owned_session(uow, controller, data["session_id"]) if data.get("session_id") else None
        )
        if usage is not None and usage.ended_at is None:
            usage.busy = kind is EventKind.BUSY_STARTED
    elif kind is EventKind.FAULT:
        _fault(uow, controller, event, received_at)
    else:
        logger.info("%s from %s: %s", kind.value, controller.id, data)
    apply_badge_event(uow, controller, event, received_at)  # anti-cloning counters
    if controller.last_seen_at != received_at:  # a batch's events share their receipt time
        controller.last_seen_at = received_at


def _badge_denied(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    data = event.data
    enrolled = _enroll_if_pending(uow, controller.machine_id, data["badge_uid"], received_at)
    if enrolled is not None:
        logger.info("badge %s enrolled for %s", data["badge_uid"], enrolled.member_id)
    # The snapshot only lists permitted badges: name the holder for the manager.
    holder = uow.memo_read(("badge holder", data["badge_uid"]), lambda: _holder(uow, data))
    uow.denials.add(
        BadgeDenial(
            event_id=event.event_id,
            machine_id=controller.machine_id,
            badge_uid=data["badge_uid"],
            member_id=data.get("member_id") or holder,
            reason=data["reason"],
            at=_wall(event.wall_time),
        )
    )


def _holder(uow: SqlAlchemyUnitOfWork, data: dict[str, Any]) -> str | None:
    badge = uow.badges.by_uid(data["badge_uid"])
    return badge.member_id if badge else None


def _enroll_if_pending(
    uow: SqlAlchemyUnitOfWork, machine_id: str, badge_uid: str, at: datetime
) -> Enrollment | None:
    """Complete the machine's pending enrollment with this badge, if there is one. The
    answer "none pending" holds for the rest of the transaction (events come in order
    of receipt, and ingest starts no enrollment); a completed one changes it."""
    key = ("enrollment pending", machine_id)
    if not uow.memo_read(key, lambda: uow.enrollments.pending(machine_id, at) is not None):
        return None
    uow.memo.pop(key)
    enrolled = complete_enrollment(uow, machine_id, badge_uid, at)
    if enrolled is not None:
        uow.memo.pop(("badge holder", badge_uid), None)
    return enrolled


def _owned_session(
    uow: SqlAlchemyUnitOfWork, controller: Controller, session_id: str
) -> UsageSession | None:
    """The session of this id, if any; refused when another controller or machine owns it."""
    usage = uow.sessions.get(session_id)
    if usage is not None and not owns_session(
        usage.controller_id, usage.machine_id, controller.id, controller.machine_id
    ):
        raise EventRefusedError(
            "data.session_id", f"session {session_id} belongs to another controller or machine"
        )
    return usage


def _preload_session_starts(uow: SqlAlchemyUnitOfWork, events: list[tuple[Event, str]]) -> None:
    """Read what the session starts among these (event, machine id) ask, in two queries
    for all of them: their members and the machines whose lapse dates they move
    (`memo_read` then answers). A fleet's controllers start sessions together after a
    restart: a few round trips each held the ingest thread ~10 ms per start."""
    starts = {(e.data["member_id"], machine_id) for e, machine_id in events
              if e.kind is EventKind.SESSION_STARTED}  # fmt: skip
    wanted = {member_id for member_id, _ in starts if ("member", member_id) not in uow.memo}
    if wanted:
        members = uow.members.many(wanted)
        for member_id in wanted:
            uow.memo[("member", member_id)] = members.get(member_id)
    pairs = {
        (member_id, machine_id)
        for member_id, machine_id in starts
        if uow.memo[("member", member_id)] is not None
        and ("lapse shared", member_id, machine_id) not in uow.memo
    }
    if pairs:
        shared = uow.training_types.machines_sharing_lapse_of(pairs)
        for (member_id, machine_id), machines in shared.items():
            uow.memo[("lapse shared", member_id, machine_id)] = machines


def _session_started(uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event) -> None:
    data = event.data
    usage = _get_or_open(uow, controller, event)
    member_id = data["member_id"]
    member = uow.memo_read(("member", member_id), lambda: uow.members.get(member_id))
    usage.member_id = member.id if member else None
    usage.reported_member_id = data["member_id"]
    usage.badge_uid = data["badge_uid"]
    usage.level = data["level"]
    usage.started_at = _wall(event.wall_time)
    usage.started_mono_time = event.mono_time
    usage.boot_id = event.boot_id
    if usage.last_heartbeat_at is not None or usage.ended_at is not None:
        _redate_progress(usage)
    usage.snapshot_version = data["snapshot_version"]
    usage.maintenance_override = bool(data.get("maintenance_override", False))
    usage.supervisor_member_id = data.get("supervisor_member_id")
    usage.decided_online = bool(data.get("decided_online", False))
    usage.stale_snapshot = data["snapshot_version"] < controller.machine.snapshot_version
    # A session moves the lapse date of the member's training: the snapshots carry it.
    lapsing = uow.memo_read(
        ("lapse shared", usage.member_id, usage.machine_id),
        lambda: machines_sharing_lapse(uow, usage.member_id, usage.machine_id),
    )
    uow.machines_to_publish |= lapsing
    if usage.ended_at is not None and controller.last_seen_at is not None:
        # The end came first (reordered): reconcile now that the member is known.
        prepaid.session_ended(uow, usage, controller.last_seen_at)
    if member is None:
        logger.warning("session %s by unknown member %s", usage.id, data["member_id"])
    if usage.stale_snapshot:
        logger.warning("session %s decided on stale snapshot %s", usage.id, usage.snapshot_version)


def _redate_progress(usage: UsageSession) -> None:
    """The start arrived after heartbeats or the end (reordered): date them from it."""
    at = _progress_at(usage, usage.started_at.timestamp())
    if usage.ended_at is not None:
        usage.ended_at = at
    else:
        usage.last_heartbeat_at = at


def _session_progress(
    uow: SqlAlchemyUnitOfWork,
    controller: Controller,
    event: Event,
    received_at: datetime,
    limits: Plausibility,
) -> None:
    """A heartbeat or the end: durations only grow, and never beyond the real span."""
    data = event.data
    usage = _get_or_open(uow, controller, event)
    _check_durations(usage, event, received_at, limits)
    usage.elapsed_seconds = max(usage.elapsed_seconds, data["elapsed_seconds"])
    usage.busy_seconds = max(usage.busy_seconds, data["busy_seconds"])
    at = _progress_at(usage, data.get("ended_wall_time", event.wall_time))
    if event.kind is EventKind.SESSION_HEARTBEAT:
        usage.last_heartbeat_at = at
    else:
        usage.ended_at = at
        usage.end_reason = data["reason"]
        usage.busy = False
        prepaid.session_ended(uow, usage, received_at)


def _progress_at(usage: UsageSession, reported_wall: float) -> datetime:
    """The session's start plus its (monotonic) elapsed time, once the start is in."""
    started = usage.started_at.timestamp() if usage.started_mono_time is not None else None
    return _wall(progress_wall_time(started, usage.elapsed_seconds, reported_wall=reported_wall))


def _check_durations(
    usage: UsageSession, event: Event, received_at: datetime, limits: Plausibility
) -> None:
    """Refuse elapsed/busy times longer than the session has really run (once its
    start is known: a session opened by a heartbeat takes its start from it). A wall
    time outside the plausible window says nothing of the span: the monotonic one does."""
    if usage.started_mono_time is None:
        return
    ended_wall = event.data.get("ended_wall_time", event.wall_time)
    same_boot = event.boot_id == usage.boot_id and "ended_wall_time" not in event.data
    if same_boot and wall_time_problem(ended_wall, received_at.timestamp(), limits):
        ended_wall = usage.started_at.timestamp()
    span = session_span(
        usage.started_at.timestamp(),
        ended_wall,
        usage.started_mono_time,
        event.mono_time if same_boot else None,
    )
    problem = duration_problem(
        event.data["elapsed_seconds"], event.data["busy_seconds"], span, limits
    )
    if problem:
        raise EventRefusedError(*problem)


def _fault(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    """A controller reports trouble (reader, outbox, snapshot, watchdog): keep it for managers."""
    logger.warning("fault %s from %s: %s", event.data["code"], controller.id, event.data["message"])
    uow.faults.add(
        ControllerFault(
            event_id=event.event_id,
            machine_id=controller.machine_id,
            controller_id=controller.id,
            code=event.data["code"][:64],
            message=event.data["message"][:500],
            at=_wall(event.wall_time),
            received_at=received_at,
        )
    )


def _oops(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    """A member pressed the machine's oops button: it is out of service until a manager says."""
    machine = controller.machine
    before = {"out_of_service": machine.out_of_service}
    message = event.data.get("message") or "no details given"
    machine.out_of_service = True
    machine.out_of_service_reason = f"oops reported: {message}"[:500]
    record(
        uow, actor=None, action="machine.oops", object_type="machine", object_id=machine.id,
        before=before, after={"out_of_service": True, "member_id": event.data.get("member_id")},
        at=received_at, system_actor=event.data.get("member_id") or controller.id,
    )  # fmt: skip
    uow.machines_to_publish.add(machine.id)


def _get_or_open(uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event) -> UsageSession:
    """The session an event belongs to; opened from this event if its start is not in yet."""
    session_id = event.data["session_id"]
    usage = _owned_session(uow, controller, session_id)
    if usage is None:
        elapsed = float(event.data.get("elapsed_seconds", 0.0))
        usage = UsageSession(
            id=session_id,
            machine_id=controller.machine_id,
            controller_id=controller.id,
            reported_member_id=event.data.get("member_id", ""),
            boot_id=event.boot_id,
            started_at=_wall(max(event.wall_time - elapsed, 0.0)),
            elapsed_seconds=0.0,
            busy_seconds=0.0,
            busy=False,
            stale_snapshot=False,
        )
        uow.sessions.add(usage)
    return usage


def record_controller_status(cmd: RecordControllerStatus, uow: SqlAlchemyUnitOfWork) -> bool:
    """Update a controller's online/offline state; False when the message is unusable."""
    return record_controller_statuses(RecordControllerStatuses((cmd,)), uow)[0]


def record_controller_statuses(
    cmd: RecordControllerStatuses, uow: SqlAlchemyUnitOfWork
) -> list[bool]:
    """Each status in turn, one commit for all; per status, False when it is unusable.

    The controllers and the commands those saying `online` have
    not confirmed are read in one query each, whatever the number of statuses: every
    controller re-announces its status each heartbeat interval, so a fleet of 1,000
    sends 100 a second, and a few queries each held the ingest thread for seconds.
    """
    readings = [_read_status(status) for status in cmd.statuses]
    ids = {reading[1].controller_id for reading in readings if reading is not None}
    controllers = uow.controllers.many(ids)  # a machine is read only to resend a command
    online = {
        status.controller_id
        for _, status in filter(None, readings)
        if status.state is ControllerState.ONLINE and status.controller_id in controllers
    }
    since = min((c.received_at for c in cmd.statuses), default=None)
    pending = uow.commands.pending_of(online, since) if online and since else {}
    applied = [
        reading is not None and _apply_status(uow, cmd.statuses[i], reading, controllers, pending)
        for i, reading in enumerate(readings)
    ]
    uow.commit()
    return applied


def _read_status(cmd: RecordControllerStatus) -> tuple[TopicAddress, ControllerStatus] | None:
    try:
        return parse_topic(cmd.topic), ControllerStatus.decode(cmd.payload)
    except ProtocolError as exc:
        logger.warning("invalid status on %s: %s", cmd.topic, exc)
        return None


def _apply_status(
    uow: SqlAlchemyUnitOfWork,
    cmd: RecordControllerStatus,
    reading: tuple[TopicAddress, ControllerStatus],
    controllers: dict[str, Controller],
    pending: dict[str, list[ControllerCommand]],
) -> bool:
    address, status = reading
    controller = controllers.get(status.controller_id)
    if controller is None or controller.machine_id != address.machine:
        logger.warning("status from unregistered controller %r", status.controller_id)
        return False
    stale_will = (
        status.state is ControllerState.OFFLINE
        and status.boot_id != controller.boot_id
        and controller.state == ControllerState.ONLINE.value
    )
    if stale_will:
        # The last will of an earlier connection, arriving after the new birth.
        return True
    controller.state = status.state.value
    controller.boot_id = status.boot_id
    controller.firmware_version = status.firmware_version
    controller.last_seen_at = cmd.received_at
    if status.state is ControllerState.ONLINE:
        unexpired = [c for c in pending.get(controller.id, ()) if c.expires_at > cmd.received_at]
        if unexpired:
            resend(uow, controller.machine, unexpired)
    return True
