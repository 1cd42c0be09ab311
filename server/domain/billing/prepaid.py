"""The prepaid option: who may start, and how long, from a balance derived in cents.

A member category may be *prepaid*: its members pay in advance (top-ups) and use the
machines against that money. Their balance is never stored; it is derived:

    balance = sum of the member's ledger entries (credits, top-ups, spends, expiries,
              adjustments)
            - the price of their finished sessions not yet on an approved statement

A member may start a session when `balance >= threshold`. A session may then run
until the balance would fall below `-overdraft`: the *allowance* on a machine is the
longest session whose worst-case price (every second unlocked and busy, no free
minutes, the rate's rounding and minimum charge) stays within `balance + overdraft`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from server.domain.billing.metering import local_day
from server.domain.billing.money import BASIS
from server.domain.billing.rating import (
    MeteredSession,
    Pricing,
    Rate,
    rate_sessions,
    session_amount,
)


@dataclass(frozen=True)
class PrepaidRule:
    """A prepaid category's minimum balance to start and its overdraft bound, in cents."""

    threshold_cents: int = 0
    overdraft_cents: int = 0

    def __post_init__(self) -> None:
        if self.threshold_cents < 0 or self.overdraft_cents < 0:
            raise ValueError("a prepaid threshold and overdraft are never negative")

    def may_start(self, balance_cents: int) -> bool:
        """A session may start at or above the threshold."""
        return balance_cents >= self.threshold_cents

    def spendable_cents(self, balance_cents: int) -> int:
        """What sessions may still cost before the overdraft bound is reached."""
        return max(0, balance_cents + self.overdraft_cents)

    def overdrawn(self, balance_cents: int) -> bool:
        """The balance went past the overdraft bound."""
        return balance_cents < -self.overdraft_cents


@dataclass(frozen=True)
class MachineAllowance:
    """What a prepaid member may do on one machine (see the module docstring)."""

    may_start: bool
    allowance_s: int | None  # None: this machine charges them nothing


def worst_case_cents(rate: Rate, multiplier_bp: int, seconds: int) -> int:
    """The most a session of `seconds` can cost: all of it busy, no free minutes."""
    billed = rate.rounding.billed_minutes(seconds)
    return session_amount(rate, multiplier_bp, billed, billed, 0)


def allowance_seconds(rate: Rate | None, multiplier_bp: int, cents: int) -> int | None:
    """The longest session (whole rounding steps, in seconds) whose worst-case price is
    at most `cents`; None when the rate charges nothing at all."""
    per_hour = (rate.unlocked_cents_per_hour + rate.busy_cents_per_hour) if rate else 0
    if rate is None or per_hour * multiplier_bp == 0:
        return None
    step_s = rate.rounding.step_minutes * 60
    # Past `high` steps the raw price alone is above `cents` + 1.
    high = (cents + 1) * 60 * BASIS // (per_hour * multiplier_bp * rate.rounding.step_minutes) + 2
    low = 0  # invariant: low steps fit (0 s costs 0), high steps do not
    while high - low > 1:
        middle = (low + high) // 2
        if worst_case_cents(rate, multiplier_bp, middle * step_s) <= cents:
            low = middle
        else:
            high = middle
    return low * step_s


def machine_allowance(
    rule: PrepaidRule, balance_cents: int, rate: Rate | None, multiplier_bp: int
) -> MachineAllowance:
    """May the member start on the machine, and for how long at most."""
    return MachineAllowance(
        may_start=rule.may_start(balance_cents),
        allowance_s=allowance_seconds(rate, multiplier_bp, rule.spendable_cents(balance_cents)),
    )


def unsettled_cents(sessions: Iterable[MeteredSession], pricing: Pricing, tz: ZoneInfo) -> int:
    """The price of finished sessions not yet on an approved statement.

    Priced as a period's compute prices them, each calendar month of the lab as one
    period (free minutes are per member, tariff and month); line adjustments count
    once their statement is approved.
    """
    by_month: dict[tuple[int, int], list[MeteredSession]] = defaultdict(list)
    for session in sessions:
        day = local_day(session.started_at, tz)
        by_month[(day.year, day.month)].append(session)
    return sum(
        line.amount_cents
        for month in by_month.values()
        for line in rate_sessions(month, pricing, tz)
    )
