"""Ingest under controller clock steps: a session's times follow its monotonic elapsed time."""

from __future__ import annotations

from datetime import timedelta

from protocol import EndReason, EventKind, Level
from server.bootstrap import ServerRuntime
from server.service_layer.ingest import Outcome
from tests.server.conftest import EventFactory, Ingest

HOUR = 3600.0


def _start(events: EventFactory) -> object:
    return events(
        EventKind.SESSION_STARTED,
        session_id="s1",
        badge_uid="04A1B2C3",
        member_id="ada",
        level=Level.AUTONOMOUS.value,
        snapshot_version=1,
    )


def _stepped(events: EventFactory, kind: EventKind, elapsed: float, step: float, **data: object):
    """An event `elapsed` s into the session, its wall clock stepped by `step` s."""
    events.wall += elapsed + step
    event = events(kind, session_id="s1", elapsed_seconds=elapsed, busy_seconds=0.0, **data)
    events.wall -= step
    return event


def test_ingest_session_ended_after_clock_step_forward_ends_at_start_plus_elapsed(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    end = _stepped(events, EventKind.SESSION_ENDED, 5.0, HOUR, reason=EndReason.BADGE.value)
    assert ingest(end).outcome is Outcome.ACCEPTED
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is not None
        assert usage.ended_at - usage.started_at == timedelta(seconds=5.0)


def test_ingest_session_ended_after_clock_step_back_ends_after_its_start(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    end = _stepped(events, EventKind.SESSION_ENDED, 5.0, -HOUR, reason=EndReason.BADGE.value)
    assert ingest(end).outcome is Outcome.ACCEPTED
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is not None
        assert usage.ended_at - usage.started_at == timedelta(seconds=5.0)


def test_ingest_heartbeat_after_clock_step_is_dated_start_plus_elapsed(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    assert ingest(_stepped(events, EventKind.SESSION_HEARTBEAT, 60.0, HOUR)).outcome is (
        Outcome.ACCEPTED
    )
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.last_heartbeat_at is not None
        assert usage.last_heartbeat_at - usage.started_at == timedelta(seconds=60.0)


def test_ingest_session_started_after_its_end_dates_the_end_from_the_start(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    start = _start(events)
    end = _stepped(events, EventKind.SESSION_ENDED, 5.0, HOUR, reason=EndReason.BADGE.value)
    ingest(end)
    ingest(start)
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is not None
        assert usage.ended_at - usage.started_at == timedelta(seconds=5.0)


def test_ingest_session_ended_after_clock_step_of_a_year_ends_at_start_plus_elapsed(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    year = 400 * 86400.0
    end = _stepped(events, EventKind.SESSION_ENDED, 5.0, year, reason=EndReason.BADGE.value)
    assert ingest(end).outcome is Outcome.ACCEPTED
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is not None
        assert usage.ended_at - usage.started_at == timedelta(seconds=5.0)


def test_ingest_end_far_ahead_cannot_claim_more_than_its_monotonic_span(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(_start(events))
    year = 400 * 86400.0
    forged = _stepped(
        events, EventKind.SESSION_ENDED, 300 * 86400.0, year - 300 * 86400.0,
        reason=EndReason.BADGE.value,
    )  # fmt: skip
    assert ingest(forged).outcome is Outcome.REJECTED
    with lab.new_uow() as uow:
        usage = uow.sessions.get("s1")
        assert usage is not None and usage.ended_at is None
