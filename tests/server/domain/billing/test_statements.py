from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing.rating import MeteredSession, Pricing, rate_sessions
from server.domain.billing.statements import (
    Adjustment,
    compute_statement,
    credits_to_apply,
)
from tests.server.domain.billing.strategies import PARIS, pricings, sessions


@given(
    sessions(),
    pricings(),
    st.integers(0, 100_000),
    st.integers(0, 100),
)
def test_statement_net_due_is_charges_less_credits_and_never_negative(
    drawn: list[MeteredSession], pricing: Pricing, balance: int, cap: int
) -> None:
    lines = rate_sessions(drawn, pricing, PARIS)
    statement = compute_statement("ada", lines, balance_cents=balance, cap_percent=cap)
    totals = statement.totals
    assert totals.charges_cents == sum(line.amount_cents for line in lines) >= 0
    assert totals.net_cents == totals.charges_cents - totals.credits_applied_cents >= 0
    assert 0 <= totals.credits_applied_cents <= balance
    assert totals.credits_applied_cents * 100 <= totals.charges_cents * cap


@given(sessions(), pricings(), st.integers(0, 10_000), st.integers(0, 100))
def test_statement_recomputation_is_deterministic(
    drawn: list[MeteredSession], pricing: Pricing, balance: int, cap: int
) -> None:
    def once() -> object:
        lines = rate_sessions(drawn, pricing, PARIS)
        return compute_statement("ada", lines, balance_cents=balance, cap_percent=cap)

    assert once() == once()


def test_statement_credits_use_all_they_may() -> None:
    assert credits_to_apply(1000, 5000, 50) == 500
    assert credits_to_apply(1000, 300, 50) == 300
    assert credits_to_apply(999, 5000, 50) == 499  # the cap rounds down
    assert credits_to_apply(1000, -20, 100) == 0


def test_statement_adjustment_replaces_a_line_amount_and_keeps_the_computed_one() -> None:
    from datetime import UTC, date, datetime, timedelta

    from server.domain.billing.rating import Rate

    pricing = Pricing({"laser": "c"}, (Rate("r", "c", date(2026, 1, 1), 1200),))
    start = datetime(2026, 2, 1, tzinfo=UTC)
    session = MeteredSession(
        "s1", "ada", "member", "laser", start, start + timedelta(hours=1), 3600
    )
    lines = rate_sessions([session], pricing, PARIS)
    statement = compute_statement(
        "ada", lines, balance_cents=0, cap_percent=100,
        adjustments={"s1": Adjustment("s1", 500, "laser jammed for half the session")},
    )  # fmt: skip
    (line,) = statement.lines
    assert (line.amount_cents, line.computed_cents, statement.totals.charges_cents) == (
        500,
        1200,
        500,
    )


def test_statement_adjustment_refuses_a_negative_amount_or_no_reason() -> None:
    with pytest.raises(ValueError, match="credit note"):
        Adjustment("s1", -1, "refund")
    with pytest.raises(ValueError, match="reason"):
        Adjustment("s1", 1, "  ")
