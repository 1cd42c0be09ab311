from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing.metering import RoundingRule
from server.domain.billing.rating import MeteredSession, Pricing, Rate, rate_sessions
from tests.server.domain.billing.strategies import PARIS, pricings, rates, sessions

LASER = Pricing(
    tariff_of_machine={"laser": "cutting"},
    rates=(
        Rate("old", "cutting", date(2026, 1, 1), unlocked_cents_per_hour=1200),
        Rate("new", "cutting", date(2026, 3, 15), unlocked_cents_per_hour=1800),
    ),
    multiplier_bp={"student": 5_000},
)


def _session(start: datetime, seconds: int, **changes: object) -> MeteredSession:
    base = MeteredSession(
        session_id="s1",
        member_id="ada",
        category_id="member",
        machine_id="laser",
        started_at=start,
        ended_at=start + timedelta(seconds=seconds),
        metered_seconds=seconds,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_rating_bills_before_a_rate_change_at_the_old_rate() -> None:
    before = _session(datetime(2026, 3, 14, 22, 59, tzinfo=UTC), 3600)  # 14 March in Paris
    after = _session(datetime(2026, 3, 14, 23, 0, tzinfo=UTC), 3600)  # 15 March 00:00 Paris
    assert [line.rate_id for line in rate_sessions([before], LASER, PARIS)] == ["old"]
    assert [line.amount_cents for line in rate_sessions([after], LASER, PARIS)] == [1800]


def test_rating_meters_a_dst_night_in_real_time() -> None:
    # 01:30 to 03:30 Paris on 29 March 2026 is one real hour.
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    (line,) = rate_sessions([_session(start, 3600)], LASER, PARIS)
    assert (line.billed_minutes, line.amount_cents) == (60, 1800)


def test_rating_applies_the_category_multiplier() -> None:
    session = _session(datetime(2026, 2, 1, 10, tzinfo=UTC), 3600, category_id="student")
    assert rate_sessions([session], LASER, PARIS)[0].amount_cents == 600


def test_rating_prefers_a_specific_category_rate() -> None:
    specific = Rate("stud", "cutting", date(2026, 1, 1), 300, category_id="student")
    pricing = replace(LASER, rates=(*LASER.rates, specific))
    session = _session(datetime(2026, 2, 1, 10, tzinfo=UTC), 3600, category_id="student")
    (line,) = rate_sessions([session], pricing, PARIS)
    assert (line.rate_id, line.multiplier_bp, line.amount_cents) == ("stud", 10_000, 300)


def test_rating_raises_a_short_session_to_the_minimum_charge() -> None:
    rate = Rate("min", "cutting", date(2026, 1, 1), 1200, minimum_cents=250)
    pricing = replace(LASER, rates=(rate,))
    (line,) = rate_sessions([_session(datetime(2026, 2, 1, tzinfo=UTC), 30)], pricing, PARIS)
    assert line.amount_cents == 250


def test_rating_uses_the_free_allowance_in_start_order() -> None:
    rate = Rate("free", "cutting", date(2026, 1, 1), 600, free_minutes=90)
    pricing = replace(LASER, rates=(rate,))
    first = _session(datetime(2026, 2, 1, 9, tzinfo=UTC), 3600, session_id="a")
    second = _session(datetime(2026, 2, 2, 9, tzinfo=UTC), 3600, session_id="b")
    lines = rate_sessions([second, first], pricing, PARIS)
    assert [(line.free_minutes, line.amount_cents) for line in lines] == [(60, 0), (30, 300)]


def test_rating_leaves_a_machine_without_tariff_free() -> None:
    session = _session(datetime(2026, 2, 1, tzinfo=UTC), 3600, machine_id="lathe")
    assert rate_sessions([session], LASER, PARIS)[0].amount_cents == 0


@given(sessions(), pricings())
def test_rating_charges_are_never_negative(drawn: list[MeteredSession], pricing: Pricing) -> None:
    assert all(line.amount_cents >= 0 for line in rate_sessions(drawn, pricing, PARIS))


@given(sessions(), pricings(), st.randoms(use_true_random=False))
def test_rating_is_deterministic_whatever_the_input_order(
    drawn: list[MeteredSession], pricing: Pricing, rnd: object
) -> None:
    shuffled = list(drawn)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rate_sessions(drawn, pricing, PARIS) == rate_sessions(shuffled, pricing, PARIS)


@given(
    rates("cutting", "r"),
    st.sampled_from([5_000, 10_000, 15_000]),
    st.integers(1, 10 * 3600),
    st.data(),
)
def test_rating_split_changes_total_by_at_most_the_rounding_rule(
    rate: Rate, multiplier: int, seconds: int, data: st.DataObject
) -> None:
    """Splitting a session at any instant changes its price by at most one rounding step
    per priced meter (plus one cent of rounding per piece); no allowance or minimum here,
    as those are per-session and per-period rules rather than rounding."""
    rate = replace(rate, minimum_cents=0, free_minutes=0, category_id=None)
    pricing = Pricing({"laser": "cutting"}, (rate,), {"member": multiplier})
    start = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # the autumn DST night in Paris
    busy = data.draw(st.integers(0, seconds))
    cut = data.draw(st.integers(0, seconds))
    busy_cut = data.draw(st.integers(max(0, busy - (seconds - cut)), min(busy, cut)))
    whole = _session(start, seconds, busy_seconds=busy)
    first = _session(start, cut, busy_seconds=busy_cut, session_id="p1")
    second = _session(
        start + timedelta(seconds=cut), seconds - cut, busy_seconds=busy - busy_cut,
        session_id="p2",
    )  # fmt: skip
    total = rate_sessions([whole], pricing, PARIS)[0].amount_cents
    parts = sum(line.amount_cents for line in rate_sessions([first, second], pricing, PARIS))
    step = rate.rounding.step_minutes
    per_step = ((rate.unlocked_cents_per_hour + rate.busy_cents_per_hour) * step * multiplier) / (
        60 * 10_000
    )
    assert total <= parts + 2  # a split never makes it cheaper than rounding allows
    assert parts - total <= per_step + 2


def test_rounding_rule_of_whole_session_matches_its_parts_on_step_boundaries() -> None:
    rate = Rate("r", "cutting", date(2026, 1, 1), 600, rounding=RoundingRule(15))
    pricing = Pricing({"laser": "cutting"}, (rate,))
    start = datetime(2026, 2, 1, tzinfo=UTC)
    whole = rate_sessions([_session(start, 3600)], pricing, PARIS)[0].amount_cents
    halves = rate_sessions(
        [_session(start, 1800), _session(start + timedelta(minutes=30), 1800, session_id="s2")],
        pricing,
        PARIS,
    )
    assert whole == sum(line.amount_cents for line in halves) == 600
