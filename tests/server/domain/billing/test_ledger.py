from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing.ledger import (
    EntryKind,
    LedgerEntry,
    LedgerError,
    add_months,
    append,
    balance,
    due_expiries,
    verify,
)

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)

operations = st.lists(
    st.tuples(
        st.sampled_from(list(EntryKind)),
        st.integers(1, 5_000),
        st.integers(0, 240),
    ),
    max_size=25,
)


def _build(ops: list[tuple[EntryKind, int, int]]) -> list[LedgerEntry]:
    """A chain from drawn operations; debits that would overdraw are skipped."""
    chain: list[LedgerEntry] = []
    for i, (kind, cents, minutes) in enumerate(ops):
        amount = cents if kind in (EntryKind.EARN, EntryKind.TOPUP, EntryKind.ADJUST) else -cents
        if kind is EntryKind.ADJUST and i % 2:
            amount = -cents
        if balance(chain) + amount < 0:
            continue
        chain.append(
            append(
                chain,
                member_id="ada",
                kind=kind,
                amount_cents=amount,
                reason=f"op {i}",
                source_type="test",
                source_id=str(i),
                at=T0 + timedelta(days=i),
                actor_id="tess",
                minutes=minutes,
            )
        )
    return chain


@given(operations)
def test_ledger_sums_to_the_balance_and_the_chain_verifies(
    ops: list[tuple[EntryKind, int, int]],
) -> None:
    chain = _build(ops)
    assert verify(chain) == []
    running = 0
    for i, entry in enumerate(chain):
        running += entry.amount_cents
        assert balance(chain[: i + 1]) == running >= 0


@given(operations, st.data())
def test_ledger_detects_any_tampered_entry(
    ops: list[tuple[EntryKind, int, int]], data: st.DataObject
) -> None:
    chain = _build(ops)
    if not chain:
        return
    index = data.draw(st.integers(0, len(chain) - 1))
    field = data.draw(st.sampled_from(["amount_cents", "reason", "at", "actor_id", "minutes"]))
    entry = chain[index]
    changed = {
        "amount_cents": entry.amount_cents + 1,
        "reason": entry.reason + "!",
        "at": entry.at + timedelta(seconds=1),
        "actor_id": "mallory",
        "minutes": entry.minutes + 1,
    }[field]
    tampered = [*chain[:index], replace(entry, **{field: changed}), *chain[index + 1 :]]
    assert verify(tampered)


@given(operations, st.data())
def test_ledger_detects_a_removed_entry(
    ops: list[tuple[EntryKind, int, int]], data: st.DataObject
) -> None:
    chain = _build(ops)
    if len(chain) < 2:
        return
    index = data.draw(st.integers(0, len(chain) - 2))
    assert verify([*chain[:index], *chain[index + 1 :]])


def test_ledger_refuses_to_overdraw() -> None:
    with pytest.raises(LedgerError, match="negative"):
        append(
            [], member_id="ada", kind=EntryKind.SPEND, amount_cents=-1, reason="r",
            source_type="statement", source_id="1", at=T0,
        )  # fmt: skip


def test_ledger_refuses_a_wrong_sign() -> None:
    with pytest.raises(LedgerError, match="positive"):
        append(
            [], member_id="ada", kind=EntryKind.EARN, amount_cents=-5, reason="r",
            source_type="claim", source_id="1", at=T0,
        )  # fmt: skip


def test_ledger_expires_unspent_earnings_oldest_spent_first() -> None:
    chain: list[LedgerEntry] = []
    for kind, amount, at in (
        (EntryKind.EARN, 1000, T0),
        (EntryKind.EARN, 500, T0 + timedelta(days=40)),
        (EntryKind.SPEND, -700, T0 + timedelta(days=50)),
    ):
        chain.append(
            append(
                chain,
                member_id="ada",
                kind=kind,
                amount_cents=amount,
                reason="r",
                source_type="t",
                source_id=str(len(chain)),
                at=at,
            )
        )
    assert due_expiries(chain, 3, T0 + timedelta(days=95)) == [(1, 300)]
    assert due_expiries(chain, 3, T0 + timedelta(days=140)) == [(1, 300), (2, 500)]
    expired = append(
        chain, member_id="ada", kind=EntryKind.EXPIRE, amount_cents=-300, reason="expired",
        source_type="ledger_entry", source_id="1", at=T0 + timedelta(days=95),
    )  # fmt: skip
    assert due_expiries([*chain, expired], 3, T0 + timedelta(days=140)) == [(2, 500)]


def test_add_months_clamps_to_the_month_end() -> None:
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 30, tzinfo=UTC), 3) == datetime(2027, 2, 28, tzinfo=UTC)
