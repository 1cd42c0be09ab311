"""Commands of usage billing and contribution credits.

Each carries `actor` (None for the system, the seed or a shell administrator) and, where
dates or money rules matter, the lab's `policy` (time zone, currency, credit rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from server.adapters.orm import utcnow
from server.domain.access import Principal
from server.domain.billing.policy import BillingPolicy

# -- prices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddTariff:
    tariff_id: str
    name: str
    machine_ids: tuple[str, ...] = ()
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UpdateTariff:
    tariff_id: str
    name: str | None = None
    machine_ids: tuple[str, ...] | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AddRate:
    """A new dated version of a tariff's prices (rates are never edited)."""

    tariff_id: str
    valid_from: date
    policy: BillingPolicy
    unlocked_cents_per_hour: int = 0
    busy_cents_per_hour: int = 0
    minimum_cents: int = 0
    rounding_minutes: int = 1
    free_minutes: int = 0
    category_id: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetCategoryMultiplier:
    category_id: str
    multiplier_bp: int
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetCategoryPrepaid:
    """The prepaid option of a member category: on or off, threshold and overdraft."""

    category_id: str
    prepaid: bool
    threshold_cents: int = 0
    overdraft_cents: int = 0
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- contributions --------------------------------------------------------------------------


@dataclass(frozen=True)
class AddContributionType:
    contribution_type_id: str
    name: str
    unit: str
    kind: str
    value: int
    automatic_source: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UpdateContributionType:
    contribution_type_id: str
    name: str | None = None
    value: int | None = None
    active: bool | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SubmitClaim:
    member_id: str
    contribution_type_id: str
    quantity: int
    description: str
    link: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class DecideClaim:
    claim_id: int
    approve: bool
    reason: str
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SweepCredits:
    """Credit what the system observed and expire old credits; safe to run again."""

    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AdjustLedger:
    """A top-up (money paid in advance) or an adjustment of a member's credits."""

    member_id: str
    kind: str  # topup | adjust
    amount_cents: int
    reason: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- periods and statements -------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPeriod:
    """Open [starts_on, ends_on); ends_on defaults to the end of the calendar month."""

    starts_on: date
    policy: BillingPolicy
    ends_on: date | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ComputePeriod:
    """(Re)compute the period's draft statements; approved ones are left as they are."""

    period_id: int
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AdjustLine:
    statement_id: int
    session_id: str
    amount_cents: int
    reason: str
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ApproveStatement:
    statement_id: int
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ClosePeriod:
    """Approve every draft statement of the period and close it."""

    period_id: int
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class IssueCreditNote:
    statement_id: int
    amount_cents: int
    reason: str
    policy: BillingPolicy
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)
