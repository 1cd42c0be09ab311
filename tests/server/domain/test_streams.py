"""Cumulative ack over a controller's outbox stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.domain.streams import advance_acked


def test_advance_acked_moves_over_contiguous_seqs() -> None:
    assert advance_acked(3, [5, 4, 6]) == 6


def test_advance_acked_stops_at_first_gap() -> None:
    assert advance_acked(3, [4, 6, 7]) == 4


def test_advance_acked_ignores_seqs_already_covered() -> None:
    assert advance_acked(5, [2, 3]) == 5


@given(st.sets(st.integers(min_value=1, max_value=60)))
def test_advance_acked_never_covers_a_missing_seq(committed: set[int]) -> None:
    acked = advance_acked(0, committed)
    assert set(range(1, acked + 1)) <= committed
    assert acked + 1 not in committed
