"""Ingest: idempotent storage, cumulative acks, sessions and denials from events."""

from __future__ import annotations

from sqlalchemy import func, select

from protocol import Ack, EndReason, EventKind, Level, ack_topic, events_topic
from server.adapters.orm import BadgeDenial, RawEvent, UsageSession
from server.bootstrap import ServerRuntime
from server.service_layer.commands import OutgoingMessage
from server.service_layer.ingest import Outcome
from tests.server.conftest import SITE, EventFactory, Ingest


def _start(events: EventFactory, session_id: str = "s1") -> object:
    return events(
        EventKind.SESSION_STARTED,
        session_id=session_id,
        badge_uid="04A1B2C3",
        member_id="ada",
        level=Level.AUTONOMOUS.value,
        snapshot_version=1,
    )


def _end(events: EventFactory, session_id: str = "s1", elapsed: float = 600.0) -> object:
    events.wall += elapsed  # the session has really run that long
    return events(
        EventKind.SESSION_ENDED,
        session_id=session_id,
        reason=EndReason.BADGE.value,
        elapsed_seconds=elapsed,
        busy_seconds=elapsed / 2,
    )


def _count(runtime: ServerRuntime, model: type) -> int:
    with runtime.new_uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def _acks(sent: list[OutgoingMessage]) -> list[Ack]:
    topic = ack_topic(SITE, "laser")
    return [Ack.decode(m.payload) for m in sent if m.topic == topic]


def test_ingest_session_started_opens_session_for_member_and_machine(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    assert ingest(_start(events)).outcome is Outcome.ACCEPTED
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None
        assert (usage.member_id, usage.machine_id, usage.ended_at) == ("ada", "laser", None)


def test_ingest_session_ended_closes_session_with_reason_and_times(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    ingest(_end(events, elapsed=600.0))
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is not None
        assert usage.end_reason == "badge"
        assert (usage.elapsed_seconds, usage.busy_seconds) == (600.0, 300.0)


def test_ingest_replayed_event_is_acked_not_stored_twice(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    start = _start(events)
    ingest(start)
    outcome = ingest(start)
    assert outcome.outcome is Outcome.DUPLICATE
    assert _count(lab, RawEvent) == 1
    assert _count(lab, UsageSession) == 1
    assert [a.up_to_seq for a in _acks(sent)] == [1, 1]


def test_ingest_ack_is_cumulative_over_contiguous_seqs(
    ingest: Ingest, events: EventFactory, sent: list[OutgoingMessage]
) -> None:
    first, second, third = _start(events), _end(events), _start(events, "s2")
    ingest(first)
    ingest(third)  # seq 2 missing: the ack must not cover it
    ingest(second)
    assert [a.up_to_seq for a in _acks(sent)] == [1, 1, 3]


def test_ingest_invalid_payload_is_stored_rejected_and_acked(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    bad = _start(events)
    payload = bad.encode().replace(b'"level":"autonomous"', b'"level":"wizard"')
    outcome = ingest(payload)
    assert outcome.outcome is Outcome.REJECTED
    assert "data.level" in (outcome.error or "")
    ack = _acks(sent)[-1]
    assert (ack.up_to_seq, ack.rejected) == (1, (1,))
    with lab.new_uow() as uow:
        raw = uow.session.scalars(select(RawEvent)).one()
        assert raw.status == "rejected" and raw.payload == payload.decode()
    assert _count(lab, UsageSession) == 0


def test_ingest_unreadable_payload_is_kept_but_not_acked(
    ingest: Ingest, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    outcome = ingest(b"\xff not json")
    assert outcome.outcome is Outcome.UNREADABLE
    assert _acks(sent) == []
    assert _count(lab, RawEvent) == 1


def test_ingest_event_from_unregistered_controller_is_refused(
    ingest: Ingest, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    stranger = EventFactory(controller_id="intruder")
    outcome = ingest(_start(stranger))
    assert outcome.outcome is Outcome.UNKNOWN_CONTROLLER
    assert _count(lab, UsageSession) == 0
    assert _acks(sent) == []


def _only_raw(runtime: ServerRuntime) -> RawEvent:
    with runtime.new_uow() as uow:
        raw = uow.session.scalars(select(RawEvent)).one()
        uow.session.expunge(raw)
        return raw


def test_ingest_event_from_unregistered_controller_is_stored_rejected_with_reason(
    ingest: Ingest, lab: ServerRuntime
) -> None:
    payload = _start(EventFactory(controller_id="intruder")).encode()
    ingest(payload)
    raw = _only_raw(lab)
    assert (raw.status, raw.payload) == ("rejected", payload.decode())
    assert "intruder" in (raw.error or "")


def test_ingest_event_on_another_machines_topic_is_stored_rejected_not_acked(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    outcome = ingest(_start(events), topic=events_topic(SITE, "cutter"))
    assert outcome.outcome is Outcome.UNKNOWN_CONTROLLER
    raw = _only_raw(lab)
    assert raw.status == "rejected" and "cutter" in (raw.error or "")
    assert sent == []


def test_ingest_event_on_another_machines_topic_leaves_its_seq_to_the_real_stream(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    start = _start(events)
    ingest(start, topic=events_topic(SITE, "cutter"))
    assert ingest(start).outcome is Outcome.ACCEPTED
    assert _count(lab, UsageSession) == 1
    assert [a.up_to_seq for a in _acks(sent)] == [1]


def test_ingest_event_on_malformed_topic_is_stored_rejected_not_acked(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    outcome = ingest(_start(events), topic="fablab/x/y/z/events/extra")
    assert outcome.outcome is Outcome.BAD_TOPIC
    raw = _only_raw(lab)
    assert (raw.status, raw.topic) == ("rejected", "fablab/x/y/z/events/extra")
    assert raw.error
    assert sent == []


def test_ingest_stranger_payload_is_stored_truncated(ingest: Ingest, lab: ServerRuntime) -> None:
    ingest(b"x" * 200_000, topic="not/a/fablab/topic")
    assert len(_only_raw(lab).payload) == 64 * 1024


def test_ingest_badge_denied_records_denial(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge"))
    with lab.new_uow() as uow:
        denial = uow.session.scalars(select(BadgeDenial)).one()
        assert (denial.machine_id, denial.badge_uid, denial.member_id) == (
            "laser",
            "04FFEE01",
            "nora",
        )


def test_ingest_heartbeat_before_start_is_merged_into_one_session(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    start = _start(events)
    heartbeat = events(
        EventKind.SESSION_HEARTBEAT, session_id="s1", elapsed_seconds=60.0, busy_seconds=20.0
    )
    ingest(heartbeat)
    ingest(start)
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None
        assert (usage.member_id, usage.elapsed_seconds, usage.busy_seconds) == ("ada", 60.0, 20.0)
    assert _count(lab, UsageSession) == 1


def test_ingest_start_from_older_snapshot_is_flagged_stale(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))  # snapshot_version=1, the server has issued a newer one
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.stale_snapshot
