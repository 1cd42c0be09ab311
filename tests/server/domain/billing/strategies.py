"""Hypothesis strategies for billing: sessions, rates with changes, DST nights, credits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from server.domain.billing.metering import RoundingRule
from server.domain.billing.rating import MeteredSession, Pricing, Rate

PARIS = ZoneInfo("Europe/Paris")
MACHINES = ("laser", "cnc", "lathe")
CATEGORIES = ("member", "student", "non-member")
# Around the two DST changes of 2026 in Paris (29 March, 25 October) and a month end.
ANCHORS = (
    datetime(2026, 3, 28, 22, 0, tzinfo=UTC),
    datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
    datetime(2026, 4, 30, 20, 0, tzinfo=UTC),
)

steps = st.sampled_from([1, 6, 15, 30, 60]).map(RoundingRule)


@st.composite
def rates(draw: st.DrawFn, tariff_id: str, rate_id: str) -> Rate:
    return Rate(
        id=rate_id,
        tariff_id=tariff_id,
        valid_from=draw(st.sampled_from([date(2026, 1, 1), date(2026, 3, 29), date(2026, 10, 15)])),
        unlocked_cents_per_hour=draw(st.integers(0, 12_000)),
        busy_cents_per_hour=draw(st.integers(0, 6_000)),
        minimum_cents=draw(st.integers(0, 500)),
        rounding=draw(steps),
        free_minutes=draw(st.sampled_from([0, 0, 30, 120])),
        category_id=draw(st.sampled_from([None, None, "student"])),
    )


@st.composite
def pricings(draw: st.DrawFn) -> Pricing:
    drawn = []
    for i in range(draw(st.integers(0, 6))):
        drawn.append(draw(rates(draw(st.sampled_from(["cutting", "milling"])), f"r{i}")))
    multipliers = {c: draw(st.sampled_from([5_000, 10_000, 15_000, 0])) for c in CATEGORIES}
    tariffs = {"laser": "cutting", "cnc": "milling", "lathe": "milling"}
    return Pricing(tariff_of_machine=tariffs, rates=tuple(drawn), multiplier_bp=multipliers)


@st.composite
def sessions(draw: st.DrawFn, n_max: int = 12) -> list[MeteredSession]:
    result = []
    for i in range(draw(st.integers(0, n_max))):
        start = draw(st.sampled_from(ANCHORS)) + timedelta(seconds=draw(st.integers(0, 6 * 3600)))
        seconds = draw(st.integers(0, 10 * 3600))
        result.append(
            MeteredSession(
                session_id=f"s{i:03d}",
                member_id=draw(st.sampled_from(["ada", "bob", "cy"])),
                category_id=draw(st.sampled_from(CATEGORIES)),
                machine_id=draw(st.sampled_from(MACHINES)),
                started_at=start,
                ended_at=start + timedelta(seconds=seconds),
                metered_seconds=seconds,
                busy_seconds=draw(st.integers(0, seconds)),
            )
        )
    return result
