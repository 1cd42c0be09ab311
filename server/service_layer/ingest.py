"""Turning controller events and status messages into committed facts, then acks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from protocol import (
    Ack,
    ControllerState,
    ControllerStatus,
    Event,
    EventEnvelope,
    EventKind,
    ProtocolError,
    ack_topic,
    parse_topic,
)
from server.adapters.orm import (
    BadgeDenial,
    Controller,
    ControllerFault,
    OutboxStream,
    RawEvent,
    UsageSession,
)
from server.domain.ingest_rules import (
    HeldEvent,
    Plausibility,
    SeqStatus,
    ack_position,
    classify_seq,
    duration_problem,
    owns_session,
    progress_wall_time,
    session_span,
    wall_time_problem,
)
from server.domain.streams import advance_acked
from server.service_layer import prepaid
from server.service_layer.audit import record
from server.service_layer.badge_counters import apply_badge_event
from server.service_layer.commands import IngestEvent, OutgoingMessage, RecordControllerStatus
from server.service_layer.configs import machines_sharing_lapse
from server.service_layer.controller_commands import mark_applied, resend_pending
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


class EventRefusedError(Exception):
    """A well-formed event that the server will not apply (stored as rejected)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def _as_text(payload: bytes) -> str:
    return payload[:_STORED_PAYLOAD_LIMIT].decode("utf-8", errors="replace")


def _wall(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def ingest_event(cmd: IngestEvent, uow: SqlAlchemyUnitOfWork) -> IngestOutcome:
    """Store one event idempotently, apply it, and queue the cumulative ack."""
    try:
        address = parse_topic(cmd.topic)
    except ProtocolError as exc:
        return _store_stranger(cmd, uow, Outcome.BAD_TOPIC, f"unexpected topic: {exc}")
    try:
        envelope = EventEnvelope.read(cmd.payload)
    except ProtocolError as exc:
        error = f"unreadable envelope: {exc}"
        logger.warning("unreadable event on %s: %s", cmd.topic, error)
        uow.events.add(_raw(cmd, None, None, "rejected", error))
        uow.commit()
        return IngestOutcome(Outcome.UNREADABLE, error)
    controller = uow.controllers.get(envelope.controller_id)
    if controller is None or controller.machine_id != address.machine:
        error = (
            f"controller {envelope.controller_id!r} is not registered"
            f" for machine {address.machine!r}"
        )
        return _store_stranger(cmd, uow, Outcome.UNKNOWN_CONTROLLER, error)

    # Every process ingesting this stream waits here: the ack is computed from all of
    # its committed seqs, never from a stale read.
    stream = uow.streams.lock(envelope.controller_id, envelope.outbox_id)
    held = uow.events.at_seq(envelope.controller_id, envelope.outbox_id, envelope.seq)
    status = classify_seq(
        _held_view(held),
        event_id=envelope.event_id,
        payload=_as_text(cmd.payload),
        seq=envelope.seq,
        acked_seq=stream.acked_seq,
    )
    if status is SeqStatus.CONFLICT:
        outcome = _record_conflict(cmd, uow, envelope, held)
    elif status is SeqStatus.NEW:
        outcome = _store_and_apply(cmd, uow, controller, envelope)
    else:
        outcome = IngestOutcome(Outcome.DUPLICATE)
    ack = _recompute_ack(uow, stream, envelope, cmd.received_at, held)
    uow.commit()
    uow.outgoing.append(OutgoingMessage(ack_topic(address.site, address.machine), ack.encode()))
    return IngestOutcome(outcome.outcome, outcome.error, ack.up_to_seq)


def _store_stranger(
    cmd: IngestEvent, uow: SqlAlchemyUnitOfWork, outcome: Outcome, error: str
) -> IngestOutcome:
    """An event outside any trusted stream (bad topic, unknown controller, another
    machine's topic): stored as rejected with the reason, never acked. It holds no
    controller, outbox or seq, so it can never take a seq of a genuine stream."""
    logger.warning("rejected event on %r: %s", cmd.topic, error)
    uow.events.add(_raw(cmd, None, None, "rejected", error))
    uow.commit()
    return IngestOutcome(outcome, error)


def _held_view(held: RawEvent | None) -> HeldEvent | None:
    if held is None:
        return None
    return HeldEvent(held.event_id or held.payload_event_id, held.payload)


def _recompute_ack(
    uow: SqlAlchemyUnitOfWork,
    stream: OutboxStream,
    envelope: EventEnvelope,
    received_at: datetime,
    held: RawEvent | None,
) -> Ack:
    """Advance the stream's contiguous ack from what is committed (on duplicates too)
    and build the ack message: it never covers a conflicting seq."""
    uow.flush()
    previous = stream.acked_seq
    above = uow.events.seqs_above(envelope.controller_id, envelope.outbox_id, previous)
    acked = advance_acked(previous, above)
    if acked != previous:
        stream.acked_seq = acked
    stream.updated_at = received_at
    conflicts = uow.events.conflict_seqs(envelope.controller_id, envelope.outbox_id)
    up_to = ack_position(acked, conflicts)
    rejected = set(
        uow.events.rejected_seqs(envelope.controller_id, envelope.outbox_id, previous, up_to)
    )
    if held is not None and held.status == "rejected" and envelope.seq <= up_to:
        rejected.add(envelope.seq)  # a resend of a rejected event: say so again
    return Ack(
        envelope.controller_id, envelope.outbox_id, up_to, tuple(sorted(rejected)),
        tuple(conflicts),
    )  # fmt: skip


def _raw(
    cmd: IngestEvent,
    envelope: EventEnvelope | None,
    event: Event | None,
    status: str,
    error: str | None,
) -> RawEvent:
    return RawEvent(
        event_id=event.event_id if event else None,
        controller_id=envelope.controller_id if envelope else None,
        outbox_id=envelope.outbox_id if envelope else None,
        seq=envelope.seq if envelope else None,
        kind=event.kind.value if event else None,
        topic=cmd.topic[:300],
        payload=_as_text(cmd.payload),
        status=status,
        error=error[:500] if error else None,
        wall_time=event.wall_time if event else None,
        received_at=cmd.received_at,
        payload_event_id=envelope.event_id if envelope else None,
    )


def _record_conflict(
    cmd: IngestEvent, uow: SqlAlchemyUnitOfWork, envelope: EventEnvelope, held: RawEvent | None
) -> IngestOutcome:
    """Another event holds this seq: keep this one as a conflict for a manager (once)."""
    held_id = (held.event_id or held.payload_event_id) if held else None
    error = f"seq {envelope.seq} is already held by event {held_id or '(unreadable)'}"
    logger.warning("conflict on %s/%s: %s", envelope.controller_id, envelope.outbox_id, error)
    payload = _as_text(cmd.payload)
    recorded = uow.events.conflict_recorded(
        envelope.controller_id, envelope.outbox_id, envelope.seq, envelope.event_id, payload
    )
    if not recorded:
        raw = _raw(cmd, envelope, None, "conflict", error)
        raw.seq, raw.conflict_seq = None, envelope.seq
        uow.events.add(raw)
    return IngestOutcome(Outcome.CONFLICT, error)


def _store_and_apply(
    cmd: IngestEvent, uow: SqlAlchemyUnitOfWork, controller: Controller, envelope: EventEnvelope
) -> IngestOutcome:
    try:
        event = Event.decode(cmd.payload)
        earlier = uow.events.by_event_id(event.event_id)
        if earlier is not None and earlier.controller_id == controller.id:
            return _moved_duplicate(cmd, uow, envelope, event, earlier)
        if earlier is not None:
            raise ProtocolError("event_id", "already used by another controller")
        _check_wall_times(
            event, cmd.received_at, cmd.limits, dated_by_start=_dated_by_start(uow, event)
        )
    except ProtocolError as exc:
        logger.warning("rejected event %s/%s: %s", envelope.controller_id, envelope.seq, exc)
        uow.events.add(_raw(cmd, envelope, None, "rejected", str(exc)))
        return IngestOutcome(Outcome.REJECTED, str(exc))
    try:
        with uow.session.begin_nested():
            _apply(uow, controller, event, cmd.received_at, cmd.limits)
    except EventRefusedError as exc:
        logger.warning("refused event %s: %s", event.event_id, exc)
        uow.events.add(_raw(cmd, envelope, event, "rejected", str(exc)))
        return IngestOutcome(Outcome.REJECTED, str(exc))
    except Exception as exc:
        # A rule that cannot be applied must not block the controller's stream forever:
        # keep the event as rejected with the reason, for a person to look at.
        logger.exception("could not apply event %s", event.event_id)
        uow.events.add(_raw(cmd, envelope, event, "rejected", f"could not apply: {exc}"))
        return IngestOutcome(Outcome.REJECTED, f"could not apply: {exc}")
    uow.events.add(_raw(cmd, envelope, event, "accepted", None))
    return IngestOutcome(Outcome.ACCEPTED)


def _moved_duplicate(
    cmd: IngestEvent,
    uow: SqlAlchemyUnitOfWork,
    envelope: EventEnvelope,
    event: Event,
    earlier: RawEvent,
) -> IngestOutcome:
    """An event this controller already committed, re-sent on a new outbox stream: it
    holds its seq there (for the ack) but is not applied again."""
    where = f"{earlier.outbox_id}/{earlier.seq}"
    raw = _raw(cmd, envelope, None, "duplicate", f"already committed as {where}")
    raw.kind, raw.wall_time = event.kind.value, event.wall_time
    uow.events.add(raw)
    return IngestOutcome(Outcome.DUPLICATE)


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


def _apply(
    uow: SqlAlchemyUnitOfWork,
    controller: Controller,
    event: Event,
    received_at: datetime,
    limits: Plausibility,
) -> None:
    controller.last_seen_at = received_at
    data = event.data
    kind = event.kind
    if kind is EventKind.BADGE_DENIED:
        _badge_denied(uow, controller, event, received_at)
    elif kind is EventKind.SESSION_STARTED:
        _session_started(uow, controller, event)
    elif kind in (EventKind.SESSION_HEARTBEAT, EventKind.SESSION_ENDED):
        _session_progress(uow, controller, event, received_at, limits)
    elif kind is EventKind.BADGE_ENROLLED:
        enrolled = complete_enrollment(uow, controller.machine_id, data["badge_uid"], received_at)
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


def _badge_denied(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    data = event.data
    enrolled = complete_enrollment(uow, controller.machine_id, data["badge_uid"], received_at)
    if enrolled is not None:
        logger.info("badge %s enrolled for %s", data["badge_uid"], enrolled.member_id)
    # The snapshot only lists permitted badges: name the holder for the manager.
    badge = uow.badges.by_uid(data["badge_uid"])
    uow.denials.add(
        BadgeDenial(
            event_id=event.event_id,
            machine_id=controller.machine_id,
            badge_uid=data["badge_uid"],
            member_id=data.get("member_id") or (badge.member_id if badge else None),
            reason=data["reason"],
            at=_wall(event.wall_time),
        )
    )


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


def _session_started(uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event) -> None:
    data = event.data
    usage = _get_or_open(uow, controller, event)
    member = uow.members.get(data["member_id"])
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
    uow.machines_to_publish |= machines_sharing_lapse(uow, usage.member_id, usage.machine_id)
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
    try:
        address = parse_topic(cmd.topic)
        status = ControllerStatus.decode(cmd.payload)
    except ProtocolError as exc:
        logger.warning("invalid status on %s: %s", cmd.topic, exc)
        return False
    controller = uow.controllers.get(status.controller_id)
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
        resend_pending(uow, controller.machine, cmd.received_at)
    uow.commit()
    return True
