"""Ingest integrity (issue 7): session ownership, seq conflicts, acks that stay correct,
implausible values and controller faults."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select, update

from protocol import Ack, EndReason, Event, EventKind, Level, ack_topic, events_topic
from server.adapters.orm import BadgeDenial, OutboxStream, RawEvent, UsageSession
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Ingest


@pytest.fixture
def cnc(lab: ServerRuntime) -> EventFactory:
    """A second machine `cnc` with its controller `cnc`; returns its event factory."""
    lab.bus.handle(cmds.AddMachine("cnc", "CNC router", SITE, key_hex=KEY_HEX))
    return EventFactory(controller_id="cnc")


def _cnc_topic() -> str:
    return events_topic(SITE, "cnc")


def _start(events: EventFactory, session_id: str = "s1", member_id: str = "ada") -> Event:
    return events(
        EventKind.SESSION_STARTED,
        session_id=session_id,
        badge_uid="04A1B2C3",
        member_id=member_id,
        level=Level.AUTONOMOUS.value,
        snapshot_version=1,
    )


def _end(events: EventFactory, session_id: str = "s1", elapsed: float = 10.0) -> Event:
    return events(
        EventKind.SESSION_ENDED,
        session_id=session_id,
        reason=EndReason.BADGE.value,
        elapsed_seconds=elapsed,
        busy_seconds=elapsed / 2,
    )


def _heartbeat(events: EventFactory, session_id: str = "s1", elapsed: float = 5.0) -> Event:
    return events(
        EventKind.SESSION_HEARTBEAT,
        session_id=session_id,
        elapsed_seconds=elapsed,
        busy_seconds=0.0,
    )


def _acks(sent: list[OutgoingMessage], machine: str = "laser") -> list[Ack]:
    topic = ack_topic(SITE, machine)
    return [Ack.decode(m.payload) for m in sent if m.topic == topic]


def _session(lab: ServerRuntime, session_id: str = "s1") -> UsageSession:
    with lab.new_uow() as uow:
        usage = uow.sessions.get(session_id)
        assert usage is not None
        return usage


def _statuses(lab: ServerRuntime) -> list[str]:
    with lab.new_uow() as uow:
        return list(uow.session.scalars(select(RawEvent.status).order_by(RawEvent.id)))


def _reissued(event: Event, **changes: Any) -> Event:
    fields = {**event.__dict__, **changes}
    return Event(**fields)


# -- 1. sessions belong to the controller and machine that created them ------------------


def test_ingest_session_ended_from_another_controller_is_rejected_and_changes_nothing(
    ingest: Ingest, events: EventFactory, cnc: EventFactory, lab: ServerRuntime,
    sent: list[OutgoingMessage],
) -> None:  # fmt: skip
    ingest(_start(events))
    outcome = ingest(_end(cnc, "s1", elapsed=1.0), _cnc_topic())
    assert outcome.outcome.value == "rejected"
    assert "another" in (outcome.error or "")
    usage = _session(lab)
    assert (usage.ended_at, usage.end_reason, usage.machine_id) == (None, None, "laser")
    assert _acks(sent, "cnc")[-1].rejected == (1,)


def test_ingest_session_started_reusing_another_machines_session_id_is_rejected(
    ingest: Ingest, events: EventFactory, cnc: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    before = _session(lab)
    outcome = ingest(_start(cnc, "s1", member_id="nora"), _cnc_topic())
    assert outcome.outcome.value == "rejected"
    after = _session(lab)
    assert (after.member_id, after.controller_id, after.started_at) == (
        "ada",
        "laser",
        before.started_at,
    )


def test_ingest_heartbeat_from_another_controller_does_not_touch_the_session(
    ingest: Ingest, events: EventFactory, cnc: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    outcome = ingest(_heartbeat(cnc, "s1", elapsed=1.0), _cnc_topic())
    assert outcome.outcome.value == "rejected"
    usage = _session(lab)
    assert (usage.elapsed_seconds, usage.last_heartbeat_at) == (0.0, None)


def test_ingest_busy_started_from_another_controller_does_not_touch_the_session(
    ingest: Ingest, events: EventFactory, cnc: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    outcome = ingest(cnc(EventKind.BUSY_STARTED, session_id="s1"), _cnc_topic())
    assert outcome.outcome.value == "rejected"
    assert _session(lab).busy is False


# -- 2. same seq, different event id: a conflict, never acked as covered ----------------


def test_ingest_same_seq_with_another_event_id_is_a_conflict_not_a_duplicate(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    held = _start(events)
    ingest(held)
    restored = _reissued(_heartbeat(events), seq=held.seq)  # a restored backup's seq 1
    outcome = ingest(restored)
    assert outcome.outcome.value == "conflict"
    ack = _acks(sent)[-1]
    assert ack.conflicts == (1,)
    assert ack.up_to_seq == 0  # never covers the conflicting seq
    assert _statuses(lab) == ["accepted", "conflict"]


def test_ingest_conflict_resent_is_stored_once_and_listed_again(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    held = _start(events)
    ingest(held)
    restored = _reissued(_heartbeat(events), seq=held.seq)
    ingest(restored)
    assert ingest(restored).outcome.value == "conflict"
    assert _acks(sent)[-1].conflicts == (1,)
    assert _statuses(lab) == ["accepted", "conflict"]


def test_ingest_event_committed_then_moved_to_a_new_stream_is_a_duplicate(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    denied = events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge")
    ingest(denied)
    moved = _reissued(denied, outbox_id="new-stream", seq=1)
    outcome = ingest(moved)
    assert outcome.outcome.value == "duplicate"
    ack = _acks(sent)[-1]
    assert (ack.outbox_id, ack.up_to_seq, ack.rejected) == ("new-stream", 1, ())
    with lab.new_uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(BadgeDenial)) == 1


def test_ingest_conflicting_event_moved_to_a_new_stream_is_applied(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    held = _start(events)
    ingest(held)
    genuine = _reissued(_start(events, "s2"), seq=held.seq)
    ingest(genuine)  # conflict on the old stream
    outcome = ingest(_reissued(genuine, outbox_id="new-stream", seq=1))
    assert outcome.outcome.value == "accepted"
    assert _session(lab, "s2").machine_id == "laser"
    assert _acks(sent)[-1].up_to_seq == 1


def test_ingest_event_id_of_another_controller_stays_rejected(
    ingest: Ingest, events: EventFactory, cnc: EventFactory, sent: list[OutgoingMessage]
) -> None:
    denied = events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge")
    ingest(denied)
    stolen = _reissued(denied, controller_id="cnc", outbox_id=cnc.outbox_id)
    outcome = ingest(stolen, _cnc_topic())
    assert outcome.outcome.value == "rejected"
    assert _acks(sent, "cnc")[-1].rejected == (1,)


# -- 10. the ack is recomputed on duplicates ---------------------------------------------


def test_ingest_duplicate_recomputes_an_ack_left_behind(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    first, second = _start(events), _end(events)
    ingest(first)
    ingest(second)
    with lab.new_uow() as uow:  # what a lost update between two processes leaves
        uow.session.execute(update(OutboxStream).values(acked_seq=0))
        uow.commit()
    ingest(second)
    assert _acks(sent)[-1].up_to_seq == 2
    with lab.new_uow() as uow:
        assert uow.session.scalar(select(OutboxStream.acked_seq)) == 2


# -- 12. implausible values are rejected with a reason -----------------------------------


def test_ingest_wall_time_far_ahead_of_server_clock_is_rejected(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    future = _reissued(_start(events), wall_time=time.time() + 3000 * 365 * 86400.0)
    outcome = ingest(future)
    assert outcome.outcome.value == "rejected"
    assert "wall_time" in (outcome.error or "")
    assert _acks(sent)[-1].rejected == (1,)
    with lab.new_uow() as uow:
        assert uow.sessions.get("s1") is None


def test_ingest_wall_time_a_day_ahead_is_rejected(ingest: Ingest, events: EventFactory) -> None:
    future = _reissued(_start(events), wall_time=time.time() + 86400.0)
    outcome = ingest(future)
    assert outcome.outcome.value == "rejected"
    assert "wall_time" in (outcome.error or "")


def test_ingest_wall_time_years_behind_is_rejected(ingest: Ingest, events: EventFactory) -> None:
    past = _reissued(_start(events), wall_time=time.time() - 5 * 365 * 86400.0)
    assert ingest(past).outcome.value == "rejected"


def test_ingest_elapsed_beyond_the_sessions_real_span_is_rejected(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    outcome = ingest(_end(events, elapsed=7 * 86400.0))  # one second after its start
    assert outcome.outcome.value == "rejected"
    assert "elapsed_seconds" in (outcome.error or "")
    assert _session(lab).ended_at is None


def test_ingest_elapsed_within_the_sessions_span_is_accepted(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    events.wall += 600.0
    assert ingest(_end(events, elapsed=600.0)).outcome.value == "accepted"


def test_ingest_elapsed_of_1e308_is_rejected_not_crashing(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    payload = _end(events).encode().replace(b'"elapsed_seconds":10.0', b'"elapsed_seconds":1e308')
    outcome = ingest(payload)
    assert outcome.outcome.value == "rejected"
    assert "elapsed_seconds" in (outcome.error or "")


def test_ingest_seq_beyond_63_bits_is_stored_rejected_not_crashing(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    payload = _reissued(_start(events), seq=2**63).encode()
    outcome = ingest(payload)  # must not raise into the worker's retry path
    assert outcome.outcome.value in ("rejected", "unreadable")
    assert "seq" in (outcome.error or "")
    assert _statuses(lab) == ["rejected"]


# -- 14. controller faults are stored ----------------------------------------------------


def test_ingest_fault_event_is_stored_for_its_machine(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(events(EventKind.FAULT, code="reader_failure", message="no answer from MFRC522"))
    with lab.new_uow() as uow:
        [fault] = uow.faults.page(machine_id="laser")[0]
        assert (fault.machine_id, fault.code, fault.message) == (
            "laser",
            "reader_failure",
            "no answer from MFRC522",
        )
