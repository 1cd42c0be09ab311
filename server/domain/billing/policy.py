"""The lab's billing settings, as the rules need them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class BillingPolicy:
    """Time zone and currency of the lab, and its credit rules.

    `credit_cap_percent`: the share of a statement's charges credits may pay;
    `credit_cents_per_minute`: the exchange of machine-minute credits into money;
    `credit_expiry_months`: earned credits unused this long expire (None: never);
    `volunteer_cents_per_hour`: values volunteer time on 864/875 in the journal (None: off).
    """

    timezone: str = "Europe/Paris"
    currency: str = "EUR"
    credit_cap_percent: int = 100
    credit_cents_per_minute: int = 10
    credit_expiry_months: int | None = None
    volunteer_cents_per_hour: int | None = None

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
