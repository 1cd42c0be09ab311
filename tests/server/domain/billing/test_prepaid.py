"""The prepaid option's pure rules: threshold, overdraft, allowance, derived balance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_pi.clock import Instant
from firmware_pi.controller import Controller, EmitEvent
from protocol import (
    EndReason,
    EventKind,
    Level,
    MachineSettings,
    PermissionEntry,
    PermissionSnapshot,
    Prepaid,
    badge_digest,
)
from server.domain.billing.metering import RoundingRule, whole_seconds
from server.domain.billing.prepaid import (
    PrepaidRule,
    allowance_seconds,
    machine_allowance,
    unsettled_cents,
    worst_case_cents,
)
from server.domain.billing.rating import MeteredSession, Pricing, Rate
from tests.server.domain.billing.strategies import PARIS

LASER_RATE = Rate("r1", "cutting", date(2026, 1, 1), unlocked_cents_per_hour=1200,
                  rounding=RoundingRule(15), minimum_cents=200)  # fmt: skip
LASER = Pricing(tariff_of_machine={"laser": "cutting"}, rates=(LASER_RATE,))
START = datetime(2026, 10, 8, 12, 0, tzinfo=UTC)


def _session(sid: str, start: datetime, seconds: int, busy: int = 0) -> MeteredSession:
    return MeteredSession(sid, "ada", "member", "laser", start, start + timedelta(seconds=seconds),
                          seconds, busy)  # fmt: skip


def test_prepaid_rule_may_start_at_the_threshold_not_below() -> None:
    rule = PrepaidRule(threshold_cents=500, overdraft_cents=200)
    assert rule.may_start(500)
    assert not rule.may_start(499)


def test_prepaid_rule_is_overdrawn_only_past_the_bound() -> None:
    rule = PrepaidRule(threshold_cents=0, overdraft_cents=200)
    assert not rule.overdrawn(-200)
    assert rule.overdrawn(-201)


def test_prepaid_rule_refuses_negative_settings() -> None:
    with pytest.raises(ValueError, match="never negative"):
        PrepaidRule(threshold_cents=-1)


def test_prepaid_allowance_is_whole_steps_within_the_money() -> None:
    # 12.00/h in 15-minute steps: 3.00 per quarter; 10.00 buys three quarters (9.00).
    assert allowance_seconds(LASER_RATE, 10_000, 1000) == 3 * 15 * 60


def test_prepaid_allowance_is_zero_below_the_minimum_charge() -> None:
    # The first quarter costs 3.00; 1.99 buys nothing.
    assert allowance_seconds(LASER_RATE, 10_000, 199) == 0


def test_prepaid_allowance_counts_busy_time_as_worst_case() -> None:
    both = replace(LASER_RATE, busy_cents_per_hour=1200)  # 6.00 per quarter when busy
    assert allowance_seconds(both, 10_000, 1000) == 15 * 60


def test_prepaid_allowance_scales_with_the_category_multiplier() -> None:
    assert allowance_seconds(LASER_RATE, 5_000, 1000) == 6 * 15 * 60  # 1.50 per quarter


def test_prepaid_allowance_is_unlimited_on_a_free_machine() -> None:
    assert allowance_seconds(None, 10_000, 0) is None
    assert allowance_seconds(replace(LASER_RATE, unlocked_cents_per_hour=0), 10_000, 0) is None


def test_prepaid_machine_allowance_includes_the_overdraft() -> None:
    rule = PrepaidRule(threshold_cents=500, overdraft_cents=300)
    assert machine_allowance(rule, 400, LASER_RATE, 10_000).may_start is False
    # 4.00 + 3.00 overdraft = 7.00: two quarters (6.00).
    assert machine_allowance(rule, 400, LASER_RATE, 10_000).allowance_s == 2 * 15 * 60


@given(
    cents=st.integers(0, 50_000),
    unlocked=st.integers(1, 12_000),
    busy=st.integers(0, 6_000),
    minimum=st.integers(0, 1_000),
    step=st.sampled_from([1, 6, 15, 60]),
    multiplier=st.sampled_from([5_000, 10_000, 15_000]),
)
def test_prepaid_allowance_is_the_longest_session_that_fits(
    cents: int, unlocked: int, busy: int, minimum: int, step: int, multiplier: int
) -> None:
    rate = Rate("r", "t", date(2026, 1, 1), unlocked, busy, minimum, RoundingRule(step))
    allowance = allowance_seconds(rate, multiplier, cents)
    assert allowance is not None
    assert worst_case_cents(rate, multiplier, allowance) <= cents
    assert worst_case_cents(rate, multiplier, allowance + 1) > cents


def test_prepaid_unsettled_usage_prices_like_the_statement() -> None:
    sessions = [_session("s1", START, 70 * 60), _session("s2", START + timedelta(days=1), 60)]
    assert unsettled_cents(sessions, LASER, PARIS) == 1500 + 300


def test_prepaid_unsettled_usage_gives_free_minutes_per_month() -> None:
    free = replace(LASER, rates=(replace(LASER_RATE, free_minutes=15),))
    october = _session("s1", START, 15 * 60)
    november = _session("s2", datetime(2026, 11, 3, 12, 0, tzinfo=UTC), 15 * 60)
    assert unsettled_cents([october, november], free, PARIS) == 0


# -- the controller and the server together, online -------------------------------------------

KEY = b"k" * 32
BADGE = "04A1B2C3"


def _snapshot(version: int, allowance: tuple[bool, int | None]) -> PermissionSnapshot:
    entry = PermissionEntry(badge_digest(KEY, BADGE), "ada", Level.AUTONOMOUS,
                            prepaid=Prepaid(*allowance))  # fmt: skip
    return PermissionSnapshot(
        site="lab", machine="laser", controller_id="c", version=version, issued_at=0,
        settings=MachineSettings(name="Laser", warning_s=10**6), permissions=(entry,),
    )  # fmt: skip


def _run_session(controller: Controller, mono: float, wanted_s: int) -> tuple[float, float] | None:
    """Tap, work up to `wanted_s` (ended earlier by the controller), tap off; the
    (elapsed, end mono) of the session, None if refused. The huge `warning_s` makes
    the first tick tell when the allowance ends, so time jumps straight there."""
    effects = controller.tap(BADGE, Instant(0.0, mono))
    if controller.session is None:
        return None
    end = mono + wanted_s
    effects = controller.tick(Instant(0.0, mono))
    for effect in effects:
        if isinstance(effect, EmitEvent) and effect.kind is EventKind.SESSION_WARNING:
            end = min(end, mono + effect.data["ends_in_seconds"])
    if controller.session is not None:
        effects = controller.tick(Instant(0.0, end))
    if controller.session is not None:
        effects = controller.tap(BADGE, Instant(0.0, end))
    ended = [e for e in effects if isinstance(e, EmitEvent) and e.kind is EventKind.SESSION_ENDED]
    assert ended and ended[0].data["reason"] in (EndReason.BADGE, EndReason.BALANCE_EXHAUSTED)
    return float(ended[0].data["elapsed_seconds"]), end


@settings(max_examples=60, deadline=None)
@given(
    topup=st.integers(0, 20_000),
    threshold=st.integers(0, 2_000),
    overdraft=st.integers(0, 2_000),
    rate=st.builds(
        Rate, st.just("r"), st.just("cutting"), st.just(date(2026, 1, 1)),
        st.integers(0, 6_000), st.integers(0, 3_000), st.integers(0, 500),
        st.sampled_from([1, 6, 15]).map(RoundingRule), st.sampled_from([0, 30]),
    ),
    multiplier=st.sampled_from([5_000, 10_000, 15_000]),
    wanted=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=6),
    busy_share=st.sampled_from([0, 50, 100]),
)
def test_prepaid_online_balance_never_goes_past_the_overdraft(
    topup: int, threshold: int, overdraft: int, rate: Rate, multiplier: int,
    wanted: list[int], busy_share: int,
) -> None:  # fmt: skip
    """While online (the server republishes after every session end), the derived
    balance never goes below -overdraft, whatever the sessions wanted."""
    rule = PrepaidRule(threshold, overdraft)
    pricing = Pricing({"laser": "cutting"}, (rate,), {"member": multiplier})
    controller = Controller(key=KEY)
    finished: list[MeteredSession] = []
    mono = 100.0
    for version, wanted_s in enumerate(wanted, start=1):
        balance = topup - unsettled_cents(finished, pricing, PARIS)
        assert not rule.overdrawn(balance)
        allowance = machine_allowance(rule, balance, rate, multiplier)
        controller.set_snapshot(_snapshot(version, (allowance.may_start, allowance.allowance_s)),
                                Instant(0.0, mono))  # fmt: skip
        ran = _run_session(controller, mono, wanted_s)
        if ran is None:
            assert not allowance.may_start or allowance.allowance_s == 0
            continue
        elapsed, mono = ran
        seconds = whole_seconds(elapsed)
        start = START + timedelta(minutes=version)
        finished.append(MeteredSession(f"s{version}", "ada", "member", "laser", start,
                                       start + timedelta(seconds=seconds), seconds,
                                       seconds * busy_share // 100))  # fmt: skip
        mono += 1.0
    assert not rule.overdrawn(topup - unsettled_cents(finished, pricing, PARIS))
