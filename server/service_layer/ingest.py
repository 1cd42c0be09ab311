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
from server.adapters.orm import BadgeDenial, Controller, RawEvent, UsageSession
from server.domain.streams import advance_acked
from server.service_layer.audit import record
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
    UNREADABLE = "unreadable"  # no envelope to acknowledge: stored, not acked
    UNKNOWN_CONTROLLER = "unknown_controller"
    BAD_TOPIC = "bad_topic"


@dataclass(frozen=True)
class IngestOutcome:
    outcome: Outcome
    error: str | None = None
    acked_seq: int | None = None


def _as_text(payload: bytes) -> str:
    return payload[:_STORED_PAYLOAD_LIMIT].decode("utf-8", errors="replace")


def _wall(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def ingest_event(cmd: IngestEvent, uow: SqlAlchemyUnitOfWork) -> IngestOutcome:
    """Store one event idempotently, apply it, and queue the cumulative ack."""
    try:
        address = parse_topic(cmd.topic)
    except ProtocolError as exc:
        logger.warning("event on unexpected topic %r: %s", cmd.topic, exc)
        return IngestOutcome(Outcome.BAD_TOPIC, str(exc))
    envelope = EventEnvelope.peek(cmd.payload)
    if envelope is None:
        logger.warning("unreadable event on %s: no controller/outbox/seq", cmd.topic)
        uow.events.add(_raw(cmd, None, None, "rejected", "unreadable envelope"))
        uow.commit()
        return IngestOutcome(Outcome.UNREADABLE, "unreadable envelope")
    controller = uow.controllers.get(envelope.controller_id)
    if controller is None or controller.machine_id != address.machine:
        logger.warning(
            "event from controller %r not registered for machine %r",
            envelope.controller_id,
            address.machine,
        )
        return IngestOutcome(Outcome.UNKNOWN_CONTROLLER, "controller not registered for machine")

    stream = uow.streams.get_or_create(envelope.controller_id, envelope.outbox_id)
    seq_known = envelope.seq <= stream.acked_seq or uow.events.exists(
        envelope.controller_id, envelope.outbox_id, envelope.seq
    )
    if seq_known:
        outcome = IngestOutcome(Outcome.DUPLICATE, acked_seq=stream.acked_seq)
        rejected: list[int] = []
    else:
        outcome = _store_and_apply(cmd, uow, controller, envelope)
        previous = stream.acked_seq
        uow.flush()
        above = uow.events.seqs_above(envelope.controller_id, envelope.outbox_id, previous)
        stream.acked_seq = advance_acked(previous, above)
        stream.updated_at = cmd.received_at
        rejected = uow.events.rejected_seqs(
            envelope.controller_id, envelope.outbox_id, previous, stream.acked_seq
        )
        outcome = IngestOutcome(outcome.outcome, outcome.error, stream.acked_seq)
    uow.commit()
    ack = Ack(controller.id, envelope.outbox_id, stream.acked_seq, tuple(rejected))
    uow.outgoing.append(OutgoingMessage(ack_topic(address.site, address.machine), ack.encode()))
    return outcome


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
    )


def _store_and_apply(
    cmd: IngestEvent, uow: SqlAlchemyUnitOfWork, controller: Controller, envelope: EventEnvelope
) -> IngestOutcome:
    try:
        event = Event.decode(cmd.payload)
        reused = uow.events.event_id_exists(event.event_id)
        if event.controller_id != envelope.controller_id or reused:
            raise ProtocolError("event_id", "already used by another event")
    except ProtocolError as exc:
        logger.warning("rejected event %s/%s: %s", envelope.controller_id, envelope.seq, exc)
        uow.events.add(_raw(cmd, envelope, None, "rejected", str(exc)))
        return IngestOutcome(Outcome.REJECTED, str(exc))
    try:
        with uow.session.begin_nested():
            _apply(uow, controller, event, cmd.received_at)
    except Exception as exc:
        # A rule that cannot be applied must not block the controller's stream forever:
        # keep the event as rejected with the reason, for a person to look at.
        logger.exception("could not apply event %s", event.event_id)
        uow.events.add(_raw(cmd, envelope, event, "rejected", f"could not apply: {exc}"))
        return IngestOutcome(Outcome.REJECTED, f"could not apply: {exc}")
    uow.events.add(_raw(cmd, envelope, event, "accepted", None))
    return IngestOutcome(Outcome.ACCEPTED)


def _apply(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    controller.last_seen_at = received_at
    data = event.data
    kind = event.kind
    if kind is EventKind.BADGE_DENIED:
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
    elif kind is EventKind.SESSION_STARTED:
        _session_started(uow, controller, event)
    elif kind in (EventKind.SESSION_HEARTBEAT, EventKind.SESSION_ENDED):
        usage = _get_or_open(uow, controller, event)
        usage.elapsed_seconds = max(usage.elapsed_seconds, data["elapsed_seconds"])
        usage.busy_seconds = max(usage.busy_seconds, data["busy_seconds"])
        if kind is EventKind.SESSION_HEARTBEAT:
            usage.last_heartbeat_at = _wall(event.wall_time)
        else:
            usage.ended_at = _wall(data.get("ended_wall_time", event.wall_time))
            usage.end_reason = data["reason"]
            usage.busy = False
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
        usage_or_none = uow.sessions.get(data["session_id"]) if data.get("session_id") else None
        if usage_or_none is not None and usage_or_none.ended_at is None:
            usage_or_none.busy = kind is EventKind.BUSY_STARTED
    else:
        logger.info("%s from %s: %s", kind.value, controller.id, data)


def _session_started(uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event) -> None:
    data = event.data
    usage = _get_or_open(uow, controller, event)
    member = uow.members.get(data["member_id"])
    usage.member_id = member.id if member else None
    usage.reported_member_id = data["member_id"]
    usage.badge_uid = data["badge_uid"]
    usage.level = data["level"]
    usage.started_at = _wall(event.wall_time)
    usage.boot_id = event.boot_id
    usage.snapshot_version = data["snapshot_version"]
    usage.maintenance_override = bool(data.get("maintenance_override", False))
    usage.supervisor_member_id = data.get("supervisor_member_id")
    usage.decided_online = bool(data.get("decided_online", False))
    usage.stale_snapshot = data["snapshot_version"] < controller.machine.snapshot_version
    # A session moves the lapse date of the member's training: the snapshots carry it.
    uow.machines_to_publish |= machines_sharing_lapse(uow, usage.member_id, usage.machine_id)
    if member is None:
        logger.warning("session %s by unknown member %s", usage.id, data["member_id"])
    if usage.stale_snapshot:
        logger.warning("session %s decided on stale snapshot %s", usage.id, usage.snapshot_version)


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
    usage = uow.sessions.get(session_id)
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
