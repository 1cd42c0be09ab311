from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing.metering import (
    RoundingRule,
    day_start,
    local_day,
    month_bounds,
    whole_seconds,
)
from tests.server.domain.billing.strategies import PARIS


def test_rounding_bills_per_started_step() -> None:
    assert RoundingRule(15).billed_minutes(0) == 0
    assert RoundingRule(15).billed_minutes(1) == 15
    assert RoundingRule(15).billed_minutes(15 * 60) == 15
    assert RoundingRule(15).billed_minutes(15 * 60 + 1) == 30
    assert RoundingRule(1).billed_minutes(61) == 2


@given(st.integers(1, 120), st.integers(0, 10**6))
def test_rounding_never_bills_less_than_metered_nor_a_step_more(step: int, seconds: int) -> None:
    billed = RoundingRule(step).billed_minutes(seconds)
    assert seconds <= billed * 60 < seconds + step * 60


def test_rounding_refuses_a_zero_step() -> None:
    with pytest.raises(ValueError, match="rounding step"):
        RoundingRule(0)


def test_whole_seconds_drops_fractions_and_bad_values() -> None:
    assert whole_seconds(59.999) == 59
    assert whole_seconds(-3.0) == 0
    assert whole_seconds(float("nan")) == 0


def test_local_day_attributes_by_lab_time_zone() -> None:
    # 23:30 UTC on 31 January is already 1 February in Paris.
    assert local_day(datetime(2026, 1, 31, 23, 30, tzinfo=UTC), PARIS) == date(2026, 2, 1)


def test_day_start_follows_dst() -> None:
    assert day_start(date(2026, 1, 15), PARIS) == datetime(2026, 1, 14, 23, tzinfo=UTC)
    assert day_start(date(2026, 7, 15), PARIS) == datetime(2026, 7, 14, 22, tzinfo=UTC)


def test_month_bounds_cover_december() -> None:
    assert month_bounds(date(2026, 12, 9)) == (date(2026, 12, 1), date(2027, 1, 1))
