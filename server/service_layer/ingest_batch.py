"""Storing controller events idempotently, in batches, and acknowledging them.

A batch is every event message waiting (up to the worker's bound), taken in arrival
order. It is stored and applied in one transaction with set-based reads and writes:
the batch's streams locked at once (in key order), the rows already held at its seqs
read in one query per stream, those holding its event ids and the sessions it touches
in one query each, the raw events inserted in one executemany, then one ack per stream
recomputed under the stream's row lock. The acks are sent after the commit (`MessageBus`).

The rules are those of one event at a time, applied in order: a batch gives the same
rows, sessions and acks as its events ingested one by one. Idempotent on
(controller, outbox, seq) and on event id; a seq held under another event id is a
conflict, never acked; events outside a trusted stream are stored as rejected and never
acked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from protocol import (
    Ack,
    Event,
    EventEnvelope,
    EventKind,
    ProtocolError,
    TopicAddress,
    ack_topic,
    parse_topic,
)
from server.adapters.orm import Controller, OutboxStream, RawEvent
from server.adapters.repository import HeldSeq
from server.domain.ingest_rules import HeldEvent, SeqStatus, ack_position, classify_seq
from server.domain.streams import advance_acked
from server.service_layer.commands import IngestBatch, IngestEvent, OutgoingMessage
from server.service_layer.ingest import (
    EventRefusedError,
    IngestOutcome,
    Outcome,
    apply_event,
    as_text,
    check_event,
    prefetch,
)
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

StreamKey = tuple[str, str]  # (controller id, outbox id)

# Kinds whose apply runs inside its own savepoint: rare, and they touch other parts of
# the lab (enrollments, commands, machines, the audit log). The other kinds refuse an
# event before changing anything, so a batch applies them without a savepoint each.
APPLIED_IN_SAVEPOINT = frozenset(
    {EventKind.BADGE_ENROLLED, EventKind.OOPS_REPORTED, EventKind.COMMAND_APPLIED,
     EventKind.FAULT}
)  # fmt: skip


class _UnsafeToBatchError(Exception):
    """An event failed unexpectedly outside a savepoint: redo the batch with one each."""


def ingest_event(cmd: IngestEvent, uow: SqlAlchemyUnitOfWork) -> IngestOutcome:
    """Store one event idempotently, apply it, and queue the cumulative ack."""
    return ingest_batch(IngestBatch((cmd,)), uow)[0]


def ingest_batch(cmd: IngestBatch, uow: SqlAlchemyUnitOfWork) -> list[IngestOutcome]:
    """Store and apply the batch's events in one transaction; queue one ack per stream.

    Returns each event's outcome, in order. Should a fast-path apply fail unexpectedly,
    the batch is redone with every event in its own savepoint; should it collide with
    another process (an event id stored meanwhile, a deadlock), each event is redone
    alone.
    """
    try:
        return _ingest(cmd.events, uow, safe=False)
    except _UnsafeToBatchError:
        logger.warning("an event failed in a batch of %d: redone one savepoint each",
                       len(cmd.events))  # fmt: skip
        _reset(uow)
        return _ingest(cmd.events, uow, safe=True)
    except (IntegrityError, OperationalError) as exc:
        if len(cmd.events) == 1 or not _collided(exc):
            raise
        logger.warning("a batch of %d collided with another writer: redone one by one",
                       len(cmd.events))  # fmt: skip
        _reset(uow)
        return [_ingest((event,), uow, safe=True)[0] for event in cmd.events]


def _collided(exc: IntegrityError | OperationalError) -> bool:
    """A unique key taken meanwhile, or a deadlock with another process (PostgreSQL
    aborts one of the two): both go away when the events are taken one at a time."""
    return isinstance(exc, IntegrityError) or getattr(exc.orig, "sqlstate", None) == "40P01"


def _reset(uow: SqlAlchemyUnitOfWork) -> None:
    uow.rollback()
    uow.sessions.forget()
    uow.outgoing.clear()
    uow.machines_to_publish.clear()


@dataclass
class _Message:
    """One event message of the batch and what is known of it so far."""

    cmd: IngestEvent
    read_error: str = ""
    address: TopicAddress | None = None
    envelope: EventEnvelope | None = None
    event: Event | None = None
    decode_error: ProtocolError | None = None
    controller: Controller | None = None
    outcome: IngestOutcome | None = None

    @property
    def key(self) -> StreamKey:
        assert self.envelope is not None
        return (self.envelope.controller_id, self.envelope.outbox_id)


@dataclass(frozen=True)
class _Held:
    """A stored row, as the batch needs it: from the database or inserted by the batch."""

    controller_id: str | None
    outbox_id: str | None
    seq: int | None
    event_id: str | None
    payload_event_id: str | None
    payload: str
    status: str

    @classmethod
    def of(cls, row: RawEvent) -> _Held:
        return cls(row.controller_id, row.outbox_id, row.seq, row.event_id,
                   row.payload_event_id, row.payload, row.status)  # fmt: skip

    def view(self) -> HeldEvent:
        return HeldEvent(self.event_id or self.payload_event_id, self.payload)


@dataclass
class _Batch:
    """What the batch's transaction holds: rows to insert and what they make held."""

    uow: SqlAlchemyUnitOfWork
    safe: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    held: dict[tuple[str, str, int], _Held] = field(default_factory=dict)
    by_event_id: dict[str, _Held] = field(default_factory=dict)
    conflicts: set[tuple[str, str, int, str]] = field(default_factory=set)
    resent_rejected: dict[StreamKey, set[int]] = field(default_factory=dict)

    def store(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        held = _Held(row["controller_id"], row["outbox_id"], row["seq"], row["event_id"],
                     row["payload_event_id"], row["payload"], row["status"])  # fmt: skip
        if held.controller_id and held.outbox_id and held.seq is not None:
            self.held[(held.controller_id, held.outbox_id, held.seq)] = held
        if held.event_id:
            self.by_event_id[held.event_id] = held


def _ingest(
    events: tuple[IngestEvent, ...], uow: SqlAlchemyUnitOfWork, *, safe: bool
) -> list[IngestOutcome]:
    batch = _Batch(uow, safe)
    messages = [_read(cmd) for cmd in events]
    trusted = _trusted(batch, messages)
    streams = uow.streams.lock_many({m.key for m in trusted})
    _preload(batch, trusted)
    previous = {key: stream.acked_seq for key, stream in streams.items()}
    for message in messages:  # in arrival order, strangers included
        if message.controller is None:
            message.outcome = _stranger(batch, message)
        else:
            message.outcome = _take(batch, message, streams[message.key])
    uow.flush()
    uow.events.insert_many(batch.rows)
    acks = _recompute_acks(batch, streams, previous)
    for key, received_at in {m.key: m.cmd.received_at for m in trusted}.items():
        streams[key].updated_at = received_at  # the stream's last event's receipt
    uow.commit()
    sent: set[StreamKey] = set()
    for message in trusted:
        if message.key not in sent and message.address is not None:
            sent.add(message.key)
            topic = ack_topic(message.address.site, message.address.machine)
            uow.outgoing.append(OutgoingMessage(topic, acks[message.key].encode()))
    return [_final(m, acks) for m in messages]


def _final(message: _Message, acks: dict[StreamKey, Ack]) -> IngestOutcome:
    outcome = message.outcome
    assert outcome is not None
    if message.controller is None:
        return outcome
    return IngestOutcome(outcome.outcome, outcome.error, acks[message.key].up_to_seq,
                         outcome.reason)  # fmt: skip


def _read(cmd: IngestEvent) -> _Message:
    """Topic, body and envelope: the envelope alone when the body is invalid (enough to
    know the stream and ack the event as rejected)."""
    message = _Message(cmd)
    try:
        message.address = parse_topic(cmd.topic)
    except ProtocolError as exc:
        message.read_error = f"unexpected topic: {exc}"
        return message
    try:
        event = message.event = Event.decode(cmd.payload)
    except ProtocolError as exc:
        message.decode_error = exc
    else:  # the same fields, read once
        message.envelope = EventEnvelope(
            event.controller_id, event.outbox_id, event.seq, event.event_id
        )
        return message
    try:
        message.envelope = EventEnvelope.read(cmd.payload)
    except ProtocolError as exc:
        message.read_error = f"unreadable envelope: {exc}"
    return message


def _trusted(batch: _Batch, messages: list[_Message]) -> list[_Message]:
    """The messages of registered controllers on their own machine's topic (the others
    are left without a controller, with the reason in `read_error`)."""
    ids = {m.envelope.controller_id for m in messages if m.envelope is not None}
    controllers = batch.uow.controllers.many(ids)
    trusted = []
    for message in messages:
        if message.address is None or message.envelope is None:
            continue
        controller = controllers.get(message.envelope.controller_id)
        if controller is None or controller.machine_id != message.address.machine:
            message.read_error = (
                f"controller {message.envelope.controller_id!r} is not registered"
                f" for machine {message.address.machine!r}"
            )
        else:
            message.controller = controller
            trusted.append(message)
    return trusted


def _stranger(batch: _Batch, message: _Message) -> IngestOutcome:
    """Store an event outside any trusted stream (bad topic, unreadable envelope, unknown
    controller, another machine's topic) as rejected with the reason, never acked. It
    holds no controller, outbox or seq, so it can never take a seq of a genuine stream."""
    if message.address is None:
        outcome = Outcome.BAD_TOPIC
    elif message.envelope is None:
        outcome = Outcome.UNREADABLE
    else:
        outcome = Outcome.UNKNOWN_CONTROLLER
    logger.warning("rejected event on %r: %s", message.cmd.topic, message.read_error)
    batch.store(_row(message.cmd, None, None, "rejected", message.read_error))
    return IngestOutcome(outcome, message.read_error, reason=outcome.value)


def _preload(batch: _Batch, trusted: list[_Message]) -> None:
    """Read what the batch's events need in a few queries: the rows held at their seqs,
    the rows holding their event ids, the sessions they name."""
    uow = batch.uow
    seqs: dict[StreamKey, list[int]] = {}
    for message in trusted:
        assert message.envelope is not None
        seqs.setdefault(message.key, []).append(message.envelope.seq)
    for key, row in uow.events.held_at_many(seqs).items():
        batch.held[key] = _Held.of(row)
    decoded = [m.event for m in trusted if m.event is not None]
    for event_id, row in uow.events.by_event_ids({e.event_id for e in decoded}).items():
        batch.by_event_id[event_id] = _Held.of(row)
    session_ids = {e.data["session_id"] for e in decoded if e.data.get("session_id")}
    uow.sessions.preload(session_ids)
    prefetch(uow, [(m.controller, m.event, m.cmd.received_at) for m in trusted
                   if m.controller is not None and m.event is not None])  # fmt: skip


def _take(batch: _Batch, message: _Message, stream: OutboxStream) -> IngestOutcome:
    """Classify one event against what its stream holds, then store and apply it."""
    envelope = message.envelope
    assert envelope is not None
    held = batch.held.get((envelope.controller_id, envelope.outbox_id, envelope.seq))
    status = classify_seq(
        held.view() if held else None,
        event_id=envelope.event_id,
        payload=as_text(message.cmd.payload),
        seq=envelope.seq,
        acked_seq=stream.acked_seq,
    )
    if status is SeqStatus.CONFLICT:
        return _record_conflict(batch, message, held)
    if status is SeqStatus.NEW:
        return _store_and_apply(batch, message)
    if held is not None and held.status == "rejected":
        batch.resent_rejected.setdefault(message.key, set()).add(envelope.seq)
    return IngestOutcome(Outcome.DUPLICATE)


def _row(
    cmd: IngestEvent,
    envelope: EventEnvelope | None,
    event: Event | None,
    status: str,
    error: str | None,
) -> dict[str, Any]:
    """A raw_event row (every column, so that the batch inserts them in one executemany)."""
    return {
        "event_id": event.event_id if event else None,
        "controller_id": envelope.controller_id if envelope else None,
        "outbox_id": envelope.outbox_id if envelope else None,
        "seq": envelope.seq if envelope else None,
        "kind": event.kind.value if event else None,
        "topic": cmd.topic[:300],
        "payload": as_text(cmd.payload),
        "status": status,
        "error": error[:500] if error else None,
        "wall_time": event.wall_time if event else None,
        "received_at": cmd.received_at,
        "payload_event_id": envelope.event_id if envelope else None,
        "conflict_seq": None,
    }


def _record_conflict(batch: _Batch, message: _Message, held: _Held | None) -> IngestOutcome:
    """Another event holds this seq: keep this one as a conflict for a manager (once)."""
    envelope = message.envelope
    assert envelope is not None
    held_id = (held.event_id or held.payload_event_id) if held else None
    error = f"seq {envelope.seq} is already held by event {held_id or '(unreadable)'}"
    logger.warning("conflict on %s/%s: %s", envelope.controller_id, envelope.outbox_id, error)
    payload = as_text(message.cmd.payload)
    identity = (*message.key, envelope.seq, envelope.event_id or payload)
    recorded = identity in batch.conflicts or batch.uow.events.conflict_recorded(
        envelope.controller_id, envelope.outbox_id, envelope.seq, envelope.event_id, payload
    )
    if not recorded:
        batch.conflicts.add(identity)
        row = _row(message.cmd, envelope, None, "conflict", error)
        row["seq"], row["conflict_seq"] = None, envelope.seq
        batch.store(row)
    return IngestOutcome(Outcome.CONFLICT, error)


def _store_and_apply(batch: _Batch, message: _Message) -> IngestOutcome:
    cmd, envelope, controller = message.cmd, message.envelope, message.controller
    assert envelope is not None and controller is not None
    event = message.event
    try:
        if event is None:
            raise message.decode_error or ProtocolError("event", "unreadable")
        earlier = batch.by_event_id.get(event.event_id)
        if earlier is not None and earlier.controller_id == controller.id:
            return _moved_duplicate(batch, message, event, earlier)
        if earlier is not None:
            raise ProtocolError("event_id", "already used by another controller")
        check_event(batch.uow, event, cmd.received_at, cmd.limits)
    except ProtocolError as exc:
        logger.warning("rejected event %s/%s: %s", envelope.controller_id, envelope.seq, exc)
        batch.store(_row(cmd, envelope, None, "rejected", str(exc)))
        return IngestOutcome(Outcome.REJECTED, str(exc), reason="invalid")
    refused = _apply(batch, controller, event, cmd)
    if refused is not None:
        batch.store(_row(cmd, envelope, event, "rejected", refused.error))
        return refused
    batch.store(_row(cmd, envelope, event, "accepted", None))
    return IngestOutcome(Outcome.ACCEPTED)


def _apply(
    batch: _Batch, controller: Controller, event: Event, cmd: IngestEvent
) -> IngestOutcome | None:
    """Apply one new event; the outcome when it is refused, else None."""
    uow = batch.uow
    in_savepoint = batch.safe or event.kind in APPLIED_IN_SAVEPOINT
    try:
        if in_savepoint:
            with uow.session.begin_nested():
                apply_event(uow, controller, event, cmd.received_at, cmd.limits)
        else:
            apply_event(uow, controller, event, cmd.received_at, cmd.limits)
    except EventRefusedError as exc:
        logger.warning("refused event %s: %s", event.event_id, exc)
        if in_savepoint:
            uow.sessions.forget()
        return IngestOutcome(Outcome.REJECTED, str(exc), reason="refused")
    except Exception as exc:
        if not in_savepoint and isinstance(exc, IntegrityError | OperationalError):
            raise  # another writer got there first (an autoflush): see `ingest_batch`
        if not in_savepoint:
            raise _UnsafeToBatchError from exc
        # A rule that cannot be applied must not block the controller's stream forever:
        # keep the event as rejected with the reason, for a person to look at.
        logger.exception("could not apply event %s", event.event_id)
        uow.sessions.forget()
        error = f"could not apply: {exc}"
        return IngestOutcome(Outcome.REJECTED, error, reason="could_not_apply")
    return None


def _moved_duplicate(
    batch: _Batch, message: _Message, event: Event, earlier: _Held
) -> IngestOutcome:
    """An event this controller already committed, re-sent on a new outbox stream: it
    holds its seq there (for the ack) but is not applied again."""
    where = f"{earlier.outbox_id}/{earlier.seq}"
    row = _row(message.cmd, message.envelope, None, "duplicate", f"already committed as {where}")
    row["kind"], row["wall_time"] = event.kind.value, event.wall_time
    batch.store(row)
    return IngestOutcome(Outcome.DUPLICATE)


def _recompute_acks(
    batch: _Batch, streams: dict[StreamKey, OutboxStream], previous: dict[StreamKey, int]
) -> dict[StreamKey, Ack]:
    """Each stream's ack, from two queries for all of the batch's streams (a fleet's
    batch holds an event or two per stream: queries per stream cost milliseconds per
    event). Read before any stream's `acked_seq` changes: the rows above it are those
    above `previous`."""
    events = batch.uow.events
    keys = sorted(streams)
    above = events.above_acked(keys)
    conflicts = events.conflict_seqs_many(keys)
    return {
        key: _recompute_ack(
            batch, streams[key], previous[key], above.get(key, []), conflicts.get(key, [])
        )
        for key in keys
    }


def _recompute_ack(
    batch: _Batch,
    stream: OutboxStream,
    previous: int,
    above: list[HeldSeq],
    conflicts: list[int],
) -> Ack:
    """Advance the stream's contiguous ack from what is committed (on duplicates too)
    and build the ack message: it never covers a conflicting seq. Its `rejected` lists
    the rejected seqs it newly covers, since the ack before the batch: all that the
    acks of the batch's events one at a time would have listed. `above`: the rows the
    stream holds above `previous`; `conflicts`: its lowest conflicting seqs."""
    key = (stream.controller_id, stream.outbox_id)
    above = [row for row in above if row.seq > previous]
    acked = advance_acked(previous, [row.seq for row in above])
    if acked != stream.acked_seq:
        stream.acked_seq = acked
    up_to = ack_position(acked, conflicts)
    rejected = {row.seq for row in above if row.status == "rejected" and row.seq <= up_to}
    # A resend of a rejected event: say so again.
    rejected |= {seq for seq in batch.resent_rejected.get(key, ()) if seq <= up_to}
    return Ack(*key, up_to, tuple(sorted(rejected)), tuple(conflicts))
