"""Contribution credits: what a contribution is worth."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from server.domain.billing.money import round_half_up_div


class ValueUnit(StrEnum):
    """What a contribution is counted in: its duration or a number of items."""

    HOUR = "hour"
    ITEM = "item"


class ValueKind(StrEnum):
    """What the value gives: money (cents) or machine minutes (exchanged into cents)."""

    MONEY = "money"
    MINUTES = "minutes"


class AutomaticSource(StrEnum):
    """What the system observes by itself and credits without a claim."""

    SUPERVISION = "supervision"  # a trainer's badge confirmed a supervised session
    TRAINING = "training"  # a trainer granted a training
    MAINTENANCE = "maintenance"  # a manager override on an out-of-service machine


@dataclass(frozen=True)
class ContributionRule:
    """`value` per hour or per item, in cents or machine minutes."""

    unit: ValueUnit
    kind: ValueKind
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("a contribution value is never negative")

    def credit_cents(self, quantity: int, cents_per_minute: int) -> int:
        """Cents credited for `quantity` (minutes for per-hour rules, items otherwise).

        Per-hour values are prorated to the minute and rounded half up (in cents or in
        machine minutes); machine minutes are exchanged at `cents_per_minute`.
        """
        if quantity < 0 or cents_per_minute < 0:
            raise ValueError("a quantity and an exchange rate are never negative")
        if self.unit is ValueUnit.HOUR:
            units = round_half_up_div(self.value * quantity, 60)
        else:
            units = self.value * quantity
        return units if self.kind is ValueKind.MONEY else units * cents_per_minute

    def minutes_given(self, quantity: int) -> int:
        """Time given for the contribution/retribution balance (0 for items)."""
        return quantity if self.unit is ValueUnit.HOUR else 0
