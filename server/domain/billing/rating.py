"""Rating: which rate prices a session, and what the session costs.

A *tariff* groups machines priced alike; a *rate* is one dated version of a tariff's
prices, either for every category (then scaled by the member category's multiplier) or
for one category (a specific rate, used as is). The rate in force for a session is the
version with the latest `valid_from` on or before the local day of the session's start:
a change on the 15th bills earlier sessions at the old rate. A specific rate for the
member's category wins over the general one.

Price of one session, all in integer cents:
    raw = unlocked_cents_per_hour * (billed_minutes - free_minutes)
          + busy_cents_per_hour * busy_billed_minutes
    amount = raw * multiplier / 60, rounded half up to the cent
    a positive amount below the rate's minimum charge is raised to the minimum.
The free allowance is minutes of billed unlocked time per member, tariff and period,
used by that member's sessions in start order; busy-time charges are not reduced by it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from server.domain.billing.metering import RoundingRule, local_day
from server.domain.billing.money import BASIS, round_half_up_div


@dataclass(frozen=True)
class Rate:
    id: str
    tariff_id: str
    valid_from: date
    unlocked_cents_per_hour: int = 0
    busy_cents_per_hour: int = 0
    minimum_cents: int = 0
    rounding: RoundingRule = field(default_factory=RoundingRule)
    free_minutes: int = 0
    category_id: str | None = None

    def __post_init__(self) -> None:
        values = (
            self.unlocked_cents_per_hour,
            self.busy_cents_per_hour,
            self.minimum_cents,
            self.free_minutes,
        )
        if any(v < 0 for v in values):
            raise ValueError("prices, minimum charge and free minutes are never negative")


@dataclass(frozen=True)
class Pricing:
    """Everything rating needs: machine -> tariff, rates, category multipliers."""

    tariff_of_machine: Mapping[str, str]
    rates: tuple[Rate, ...]
    multiplier_bp: Mapping[str, int] = field(default_factory=dict)  # category -> bp

    def rate_for(self, machine_id: str, category_id: str, day: date) -> tuple[Rate | None, int]:
        """The rate in force and the multiplier to apply (x1 for a specific rate)."""
        tariff = self.tariff_of_machine.get(machine_id)
        if tariff is None:
            return None, BASIS
        specific = self._latest(tariff, category_id, day)
        if specific is not None:
            return specific, BASIS
        return self._latest(tariff, None, day), self.multiplier_bp.get(category_id, BASIS)

    def _latest(self, tariff: str, category_id: str | None, day: date) -> Rate | None:
        versions = [
            r
            for r in self.rates
            if r.tariff_id == tariff and r.category_id == category_id and r.valid_from <= day
        ]
        return max(versions, key=lambda r: (r.valid_from, r.id), default=None)


@dataclass(frozen=True)
class MeteredSession:
    """A finished session as billing sees it: aware instants, whole metered seconds."""

    session_id: str
    member_id: str
    category_id: str
    machine_id: str
    started_at: datetime
    ended_at: datetime
    metered_seconds: int
    busy_seconds: int = 0
    late: bool = False


@dataclass(frozen=True)
class Line:
    """One priced session of a statement."""

    session_id: str
    machine_id: str
    started_at: datetime
    ended_at: datetime
    metered_seconds: int
    busy_seconds: int
    billed_minutes: int
    busy_billed_minutes: int
    free_minutes: int
    rate_id: str | None
    multiplier_bp: int
    amount_cents: int
    late: bool = False
    computed_cents: int | None = None  # set when an adjustment replaced the amount
    adjustment_reason: str | None = None


def session_amount(rate: Rate, multiplier: int, billed: int, busy_billed: int, free: int) -> int:
    """Cents due for one session (see the module docstring)."""
    raw = rate.unlocked_cents_per_hour * (billed - free) + rate.busy_cents_per_hour * busy_billed
    amount = round_half_up_div(raw * multiplier, 60 * BASIS)
    if 0 < amount < rate.minimum_cents:
        return rate.minimum_cents
    return amount


def _order(session: MeteredSession) -> tuple[str, datetime, str]:
    return session.member_id, session.started_at, session.session_id


def rate_sessions(sessions: Iterable[MeteredSession], pricing: Pricing, tz: ZoneInfo) -> list[Line]:
    """Price the sessions of one period, in (member, start, session id) order."""
    used_free: dict[tuple[str, str], int] = defaultdict(int)
    lines = []
    for s in sorted(sessions, key=_order):
        day = local_day(s.started_at, tz)
        rate, multiplier = pricing.rate_for(s.machine_id, s.category_id, day)
        if rate is None:
            lines.append(_line(s, None, BASIS, 0, 0, 0, 0))
            continue
        billed = rate.rounding.billed_minutes(s.metered_seconds)
        busy_billed = rate.rounding.billed_minutes(s.busy_seconds)
        key = (s.member_id, rate.tariff_id)
        free = max(0, min(billed, rate.free_minutes - used_free[key]))
        used_free[key] += billed
        amount = session_amount(rate, multiplier, billed, busy_billed, free)
        lines.append(_line(s, rate.id, multiplier, billed, busy_billed, free, amount))
    return lines


def _line(
    s: MeteredSession,
    rate_id: str | None,
    multiplier: int,
    billed: int,
    busy_billed: int,
    free: int,
    amount: int,
) -> Line:
    return Line(
        session_id=s.session_id,
        machine_id=s.machine_id,
        started_at=s.started_at,
        ended_at=s.ended_at,
        metered_seconds=s.metered_seconds,
        busy_seconds=s.busy_seconds,
        billed_minutes=billed,
        busy_billed_minutes=busy_billed,
        free_minutes=free,
        rate_id=rate_id,
        multiplier_bp=multiplier,
        amount_cents=amount,
        late=s.late,
    )
