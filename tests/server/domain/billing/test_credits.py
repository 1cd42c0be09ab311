from __future__ import annotations

from server.domain.billing.credits import ContributionRule, ValueKind, ValueUnit


def test_credits_per_hour_in_money_are_prorated_to_the_minute() -> None:
    rule = ContributionRule(ValueUnit.HOUR, ValueKind.MONEY, 1500)
    assert rule.credit_cents(90, cents_per_minute=20) == 2250
    assert rule.minutes_given(90) == 90


def test_credits_in_machine_minutes_use_the_exchange() -> None:
    rule = ContributionRule(ValueUnit.HOUR, ValueKind.MINUTES, 60)  # 1 machine hour per hour
    assert rule.credit_cents(30, cents_per_minute=20) == 600


def test_credits_per_item_give_no_time() -> None:
    rule = ContributionRule(ValueUnit.ITEM, ValueKind.MONEY, 800)
    assert (rule.credit_cents(2, cents_per_minute=20), rule.minutes_given(2)) == (1600, 0)
