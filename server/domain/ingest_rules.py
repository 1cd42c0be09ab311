"""Pure rules of ingest: where an event stands in its stream, whose session it may
touch, which values are plausible, and what the ack says."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class SeqStatus(StrEnum):
    NEW = "new"  # nothing holds this seq yet: store and apply
    DUPLICATE = "duplicate"  # the same event again: answer with the current ack
    CONFLICT = "conflict"  # another event holds this seq: never acknowledged


@dataclass(frozen=True)
class HeldEvent:
    """What the stream already holds at a seq: its event id (if readable) and payload."""

    event_id: str | None
    payload: str


def classify_seq(
    held: HeldEvent | None,
    *,
    event_id: str | None,
    payload: str,
    seq: int,
    acked_seq: int,
) -> SeqStatus:
    """Is this (seq, event) new, a replay, or a different event claiming a taken seq?

    Event ids decide when both are known; otherwise the payloads must be identical.
    A seq at or below the ack whose stored event was purged is a replay.
    """
    if held is None:
        return SeqStatus.DUPLICATE if seq <= acked_seq else SeqStatus.NEW
    if held.event_id is not None and event_id is not None:
        same = held.event_id == event_id
    else:
        same = held.payload == payload
    return SeqStatus.DUPLICATE if same else SeqStatus.CONFLICT


def ack_position(acked_seq: int, conflicts: Iterable[int]) -> int:
    """The `up_to_seq` to send: the committed contiguous seq, never covering a conflict."""
    return min([acked_seq, *(seq - 1 for seq in conflicts)])


def owns_session(
    session_controller_id: str, session_machine_id: str, controller_id: str, machine_id: str
) -> bool:
    """A session belongs to the controller and the machine that created it."""
    return session_controller_id == controller_id and session_machine_id == machine_id


@dataclass(frozen=True)
class Plausibility:
    """How far a controller's clock and durations may stray before an event is refused.

    `max_ahead_s` / `max_behind_s`: the window around the server's clock (at receipt)
    in which an event's wall times must lie (events wait in outboxes while offline, so
    the past is wide). `duration_tolerance_s`: how much a reported duration may exceed
    the session's real span.
    """

    max_ahead_s: float = 3600.0
    max_behind_s: float = 366 * 86400.0
    duration_tolerance_s: float = 30.0


def wall_time_problem(wall_time: float, now: float, limits: Plausibility) -> str | None:
    """Why a wall time is implausible at server time `now`, or None."""
    if wall_time > now + limits.max_ahead_s:
        ahead = wall_time - now
        return f"{ahead:.0f} s ahead of the server's clock (at most {limits.max_ahead_s:.0f})"
    if wall_time < now - limits.max_behind_s:
        behind = now - wall_time
        return f"{behind:.0f} s behind the server's clock (at most {limits.max_behind_s:.0f})"
    return None


def session_span(
    started_wall: float,
    ended_wall: float,
    started_mono: float | None,
    ended_mono: float | None,
) -> float:
    """How long a session has really run: by wall clock, or by the controller's
    monotonic clock (same boot) when that says longer — a wall clock stepped back
    mid-session must not make a genuine duration look impossible."""
    span = ended_wall - started_wall
    if started_mono is not None and ended_mono is not None:
        span = max(span, ended_mono - started_mono)
    return span


def duration_problem(
    elapsed_seconds: float, busy_seconds: float, span: float, limits: Plausibility
) -> tuple[str, str] | None:
    """(field, reason) when reported durations exceed the session's real span."""
    allowed = max(span, 0.0) + limits.duration_tolerance_s
    if elapsed_seconds > allowed:
        return "data.elapsed_seconds", (
            f"{elapsed_seconds:g} s is longer than the session has run ({span:.0f} s)"
        )
    if busy_seconds > elapsed_seconds + limits.duration_tolerance_s:
        return "data.busy_seconds", f"{busy_seconds:g} s is longer than the session's elapsed time"
    return None


def progress_wall_time(
    started_wall: float | None, elapsed_seconds: float, *, reported_wall: float
) -> float:
    """When a session's heartbeat or end lies in time (seconds since the epoch).

    Once the session's start is known it is `started_wall + elapsed_seconds`: the
    elapsed time is measured on the controller's monotonic clock from the start, so a
    wall clock stepped (NTP, no RTC) after the start moves nothing. Only a session whose
    start has not arrived yet takes the controller's wall time at the event.
    """
    if started_wall is None:
        return reported_wall
    return started_wall + elapsed_seconds
