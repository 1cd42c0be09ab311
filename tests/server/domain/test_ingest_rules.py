"""Pure ingest rules: where a session's progress lies in time."""

from __future__ import annotations

from server.domain.ingest_rules import progress_wall_time


def test_progress_wall_time_is_start_plus_elapsed_when_start_known() -> None:
    assert progress_wall_time(1000.0, 5.0, reported_wall=1000.0 + 3605.0) == 1005.0


def test_progress_wall_time_ignores_a_clock_stepped_back() -> None:
    assert progress_wall_time(1000.0, 5.0, reported_wall=1000.0 - 3595.0) == 1005.0


def test_progress_wall_time_is_the_reported_wall_when_start_unknown() -> None:
    assert progress_wall_time(None, 5.0, reported_wall=2000.0) == 2000.0
