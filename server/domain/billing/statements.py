"""Statements: a member's priced lines for a period, adjustments, credits, net due."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from server.domain.billing.rating import Line


@dataclass(frozen=True)
class Adjustment:
    """The treasurer sets a line's amount (>= 0) with a reason; the latest one counts."""

    session_id: str
    amount_cents: int
    reason: str

    def __post_init__(self) -> None:
        if self.amount_cents < 0:
            raise ValueError("an adjusted amount is never negative: use a credit note")
        if not self.reason.strip():
            raise ValueError("an adjustment needs a reason")


@dataclass(frozen=True)
class StatementTotals:
    charges_cents: int
    credits_applied_cents: int

    @property
    def net_cents(self) -> int:
        return self.charges_cents - self.credits_applied_cents


@dataclass(frozen=True)
class Statement:
    member_id: str
    lines: tuple[Line, ...]
    totals: StatementTotals


def apply_adjustments(lines: Iterable[Line], adjustments: Mapping[str, Adjustment]) -> list[Line]:
    """Lines with the adjusted amounts; the computed amount is kept beside."""
    result = []
    for line in lines:
        adjustment = adjustments.get(line.session_id)
        if adjustment is None:
            result.append(line)
        else:
            result.append(
                replace(
                    line,
                    amount_cents=adjustment.amount_cents,
                    computed_cents=line.amount_cents,
                    adjustment_reason=adjustment.reason,
                )
            )
    return result


def credits_to_apply(charges_cents: int, balance_cents: int, cap_percent: int) -> int:
    """Credits a statement uses: all it can, within the balance and the cap.

    The cap is the share of the charges that credits may pay, rounded down to the cent.
    """
    if not 0 <= cap_percent <= 100:
        raise ValueError("the credit cap is a percentage from 0 to 100")
    if charges_cents < 0:
        raise ValueError("charges are never negative")
    return max(0, min(balance_cents, charges_cents * cap_percent // 100))


def compute_statement(
    member_id: str,
    lines: Iterable[Line],
    *,
    balance_cents: int,
    cap_percent: int,
    adjustments: Mapping[str, Adjustment] | None = None,
) -> Statement:
    """The statement of one member: the same input always gives the same statement."""
    adjusted = tuple(apply_adjustments(lines, adjustments or {}))
    charges = sum(line.amount_cents for line in adjusted)
    applied = credits_to_apply(charges, balance_cents, cap_percent)
    return Statement(member_id, adjusted, StatementTotals(charges, applied))
