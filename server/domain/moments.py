"""The range of dates the lab accepts from its users."""

from __future__ import annotations

from datetime import UTC, datetime

from server.domain.errors import DomainError

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def in_range(moment: datetime, name: str) -> datetime:
    """The aware `moment` in UTC; DomainError when it lies outside [EARLIEST, LATEST].

    Dates near year 1 or 9999 with an offset cannot even be converted to UTC.
    """
    message = f"{name} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)"
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise DomainError(message) from exc
    if not EARLIEST <= utc <= LATEST:
        raise DomainError(message)
    return utc
