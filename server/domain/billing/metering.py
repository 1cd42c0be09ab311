"""Metering: how long a session counts and which local day (and so period) it belongs to.

The one rule: a session is metered in real elapsed time (the controller's measured
seconds, whole seconds, fractions dropped), and it belongs wholly to the local calendar
day of its start in the lab's time zone. A session spanning midnight, a period boundary
or a DST change is never split: the night of a DST change counts the hours that really
passed (a 01:30-03:30 session on the spring-forward night is 1 hour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from server.domain.billing.money import ceil_div


@dataclass(frozen=True)
class RoundingRule:
    """Billed time is counted per started step of `step_minutes` (1 = per started minute)."""

    step_minutes: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.step_minutes <= 1440:
            raise ValueError("a rounding step is 1 to 1440 minutes")

    def billed_minutes(self, seconds: int) -> int:
        """Minutes billed for `seconds` of metered time: 0 s bills 0, 1 s bills one step."""
        if seconds < 0:
            raise ValueError("metered time is never negative")
        step = self.step_minutes
        return ceil_div(seconds, step * 60) * step


def whole_seconds(measured: float) -> int:
    """The metered seconds of a measured duration: whole seconds, fractions dropped."""
    if measured < 0 or math.isnan(measured):
        return 0
    return math.floor(measured)


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    """The lab's calendar day of an instant."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant")
    return instant.astimezone(tz).date()


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which a local calendar day begins (DST-correct)."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


FIRST_BILLING_DAY = date(2000, 1, 1)
LAST_BILLING_DAY = date(2199, 12, 1)


def check_billing_day(day: date) -> date:
    """`day` if the lab may bill from or to it; a ValueError otherwise. The range keeps
    every month bound and time zone conversion of a period or rate far from the ends of
    what dates and the databases hold."""
    if not FIRST_BILLING_DAY <= day <= LAST_BILLING_DAY:
        raise ValueError(f"a billing date is between {FIRST_BILLING_DAY} and {LAST_BILLING_DAY}")
    return day


def month_bounds(day: date) -> tuple[date, date]:
    """The calendar month holding `day`: first day, first day of the next month."""
    first = day.replace(day=1)
    following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, following
