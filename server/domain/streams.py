"""Cumulative acknowledgement of a controller's outbox stream."""

from __future__ import annotations

from collections.abc import Iterable


def advance_acked(acked_seq: int, committed_above: Iterable[int]) -> int:
    """The highest seq N such that every seq up to N is committed.

    `committed_above` holds the committed seqs greater than `acked_seq` (any order);
    a gap stops the advance, so a lost event is never acknowledged by a later one.
    """
    for seq in sorted(set(committed_above)):
        if seq != acked_seq + 1:
            break
        acked_seq = seq
    return acked_seq
