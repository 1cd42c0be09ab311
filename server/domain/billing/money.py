"""Money as integer cents; Decimal only at the edges (parsing, display)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
BASIS = 10_000  # multipliers are stored in basis points: 10000 = x1


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for numerator >= 0 and denominator > 0.

    Written in integer arithmetic so the SQL aggregation can use the very same formula.
    """
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up_div needs numerator >= 0 and denominator > 0")
    return (2 * numerator + denominator) // (2 * denominator)


def ceil_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded up, for numerator >= 0 and denominator > 0."""
    return (numerator + denominator - 1) // denominator


def to_cents(amount: Decimal | str | int) -> int:
    """Exact cents of an amount given in currency units; more than 2 decimals is refused."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    if value != value.quantize(CENT, rounding=ROUND_HALF_UP):
        raise ValueError(f"{amount} has more than 2 decimals")
    return int(value * 100)


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_amount(cents: int, decimal_separator: str = ".") -> str:
    """`1234` -> `12.34` (or `12,34`): the plain amount, sign first."""
    text = f"{from_cents(cents):.2f}"
    return text.replace(".", decimal_separator)


def multiplier_bp(multiplier: Decimal | str) -> int:
    """A category multiplier (e.g. `0.5`) in basis points; at most 4 decimals, >= 0."""
    value = Decimal(str(multiplier))
    scaled = value * BASIS
    if value < 0 or scaled != scaled.to_integral_value():
        raise ValueError("a multiplier is >= 0 with at most 4 decimals")
    return int(scaled)
