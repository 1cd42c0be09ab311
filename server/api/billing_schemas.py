"""Request and response bodies of the billing API; amounts are Decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from server.api.schemas import Name


def _lab_date(value: date) -> date:
    if not date(2000, 1, 1) <= value <= date(2199, 12, 1):
        raise ValueError("a billing date is between 2000-01-01 and 2199-12-01")
    return value


LabDate = Annotated[date, AfterValidator(_lab_date)]


# Machine ids as the members API takes them: printable (PostgreSQL text holds no NUL).
_MachineRef = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[^\x00-\x1f\x7f]*$")]


class TariffCreate(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: Name
    machine_ids: list[_MachineRef] = Field(default_factory=list, max_length=200)


class TariffUpdate(BaseModel):
    name: Name | None = None
    machine_ids: list[_MachineRef] | None = Field(default=None, max_length=200)


class TariffPublic(BaseModel):
    id: str
    name: str
    machine_ids: list[str]


class RateCreate(BaseModel):
    """A new dated version of a tariff's prices; rates are never edited."""

    tariff_id: str = Field(max_length=63)
    valid_from: LabDate
    category_id: str | None = Field(default=None, max_length=40)
    unlocked_per_hour: Decimal = Field(default=Decimal(0), ge=0, max_digits=9, decimal_places=2)
    busy_per_hour: Decimal = Field(default=Decimal(0), ge=0, max_digits=9, decimal_places=2)
    minimum_charge: Decimal = Field(default=Decimal(0), ge=0, max_digits=9, decimal_places=2)
    rounding_minutes: int = Field(default=1, ge=1, le=1440)
    free_minutes: int = Field(default=0, ge=0, le=100_000)


class RatePublic(BaseModel):
    id: int
    tariff_id: str
    valid_from: date
    category_id: str | None
    unlocked_per_hour: Decimal
    busy_per_hour: Decimal
    minimum_charge: Decimal
    rounding_minutes: int
    free_minutes: int
    currency: str


class CategoryPricingUpdate(BaseModel):
    multiplier: Decimal = Field(ge=0, le=10, max_digits=6, decimal_places=4)


class CategoryPricingPublic(BaseModel):
    category_id: str
    name: str
    multiplier: Decimal


class ContributionTypeCreate(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = Field(min_length=1, max_length=200)
    unit: Literal["hour", "item"]
    kind: Literal["money", "minutes"]
    value: int = Field(ge=0, le=10_000_000, description="cents or machine minutes per unit")
    automatic_source: Literal["supervision", "training", "maintenance"] | None = None


class ContributionTypeUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    value: int | None = Field(default=None, ge=0, le=10_000_000)
    active: bool | None = None


class ContributionTypePublic(BaseModel):
    id: str
    name: str
    unit: str
    kind: str
    value: int
    automatic_source: str | None
    active: bool


class ClaimCreate(BaseModel):
    contribution_type_id: str = Field(max_length=63)
    quantity: int = Field(gt=0, le=100_000, description="minutes (per-hour types) or items")
    description: str = Field(min_length=1, max_length=2000)
    link: str | None = Field(default=None, max_length=500)
    member_id: str | None = Field(default=None, description="managers: for another member")


class ClaimDecision(BaseModel):
    approve: bool
    reason: str = Field(min_length=1, max_length=2000)


class ClaimPublic(BaseModel):
    id: int
    member_id: str
    contribution_type_id: str
    quantity: int
    description: str
    link: str | None
    status: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None


class LedgerEntryCreate(BaseModel):
    member_id: str = Field(max_length=36)
    kind: Literal["topup", "adjust"]
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    reason: str = Field(min_length=1, max_length=2000)


class LedgerEntryPublic(BaseModel):
    member_id: str
    seq: int
    kind: str
    amount: Decimal
    minutes: int
    actor_id: str | None
    reason: str
    source_type: str
    source_id: str
    at: datetime
    hash: str


class LedgerPublic(BaseModel):
    member_id: str
    balance: Decimal
    currency: str
    entries: list[LedgerEntryPublic]


class LedgerVerification(BaseModel):
    members: int
    entries: int
    problems: list[str]


class SweepPublic(BaseModel):
    supervision: int
    maintenance: int
    training: int
    expired: int


class BalancePublic(BaseModel):
    """Contribution / retribution: time given vs machine time used, money earned vs spent."""

    member_id: str | None
    credits: Decimal
    earned: Decimal
    spent: Decimal
    hours_given: Decimal
    machine_hours_used: Decimal
    currency: str


class PeriodCreate(BaseModel):
    starts_on: LabDate
    ends_on: LabDate | None = Field(default=None, description="default: end of the month")


class PeriodPublic(BaseModel):
    id: int
    starts_on: date
    ends_on: date
    status: str
    computed_at: datetime | None
    closed_at: datetime | None
    statements: int


class TotalRow(BaseModel):
    key: str
    count: int
    amount: Decimal


class PeriodTotals(BaseModel):
    period_id: int
    currency: str
    charges: Decimal
    credits_applied: Decimal
    net_due: Decimal
    by_machine: list[TotalRow]
    by_category: list[TotalRow]
    by_contribution_type: list[TotalRow]


class LinePublic(BaseModel):
    session_id: str
    machine_id: str
    started_at: datetime
    ended_at: datetime
    metered_seconds: int
    billed_minutes: int
    busy_billed_minutes: int
    free_minutes: int
    rate_id: int | None
    multiplier: Decimal
    amount: Decimal
    computed_amount: Decimal
    adjustment_reason: str | None
    late: bool


class StatementPublic(BaseModel):
    id: int
    reference: str
    period_id: int
    member_id: str
    kind: str
    status: str
    number: int | None
    charges: Decimal
    credits_applied: Decimal
    net_due: Decimal
    currency: str
    refers_to_id: int | None
    reason: str | None
    approved_at: datetime | None
    lines: list[LinePublic] | None = None


class LineAdjust(BaseModel):
    session_id: str = Field(max_length=64)
    amount: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    reason: str = Field(min_length=1, max_length=2000)


class CreditNoteCreate(BaseModel):
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    reason: str = Field(min_length=1, max_length=2000)


# An amount >= 0 in currency units, as a string with at most 2 decimals ("12.50"): the
# schema says exactly what is accepted.
_Amount = Annotated[str, Field(pattern=r"^[0-9]{1,7}(\.[0-9]{1,2})?$", examples=["5.00"])]


class CategoryPrepaidUpdate(BaseModel):
    """The prepaid option of a member category (amounts in currency units)."""

    prepaid: bool
    threshold: _Amount = "0"
    overdraft: _Amount = "0"


class CategoryPrepaidPublic(BaseModel):
    category_id: str
    prepaid: bool
    threshold: Decimal
    overdraft: Decimal
    currency: str


class PrepaidStatusPublic(BaseModel):
    """A member's prepaid balance: ledger minus usage not yet on an approved statement."""

    member_id: str
    category_id: str | None
    prepaid: bool
    balance: Decimal | None  # null when the member's category is not prepaid
    threshold: Decimal | None
    overdraft: Decimal | None
    may_start: bool | None
    currency: str


class PrepaidOverdraftPublic(BaseModel):
    """A prepaid session that left the balance past the overdraft bound."""

    session_id: str
    member_id: str
    machine_id: str
    balance: Decimal
    overdraft: Decimal
    flagged_at: datetime
    currency: str
