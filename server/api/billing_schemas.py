"""Request and response bodies of the billing API; amounts are Decimal strings.

What a request schema says is what the API takes: every text field is printable (no
control character: PostgreSQL text holds no NUL), every amount a decimal string of at
most 2 decimals (a multiplier: 4), and no property outside the schema. A date the schema
allows but the lab's billing does not (before 2000, after 2199) is a 400, not a 422.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, WithJsonSchema

from server.api.schemas import _PRINTABLE, _VISIBLE_TEXT, SLUG, Name


def _decimal_parser(pattern: str) -> Callable[[object], Decimal]:
    """Parse a decimal amount written as a JSON string matching `pattern` (never a float)."""
    compiled = re.compile(pattern)

    def parse(value: object) -> Decimal:
        if isinstance(value, Decimal):
            return value
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"a decimal string matching {pattern}")
        return Decimal(value)

    return parse


def _decimal_schema(pattern: str, example: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "examples": [example]})


def _printable(max_length: int) -> StringConstraints:
    """An id as given (member, session, machine, category): printable."""
    return StringConstraints(min_length=1, max_length=max_length, pattern=_PRINTABLE)


# Free text a person writes (a reason, a description): printable, not blank.
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=_VISIBLE_TEXT),
]
MemberRef = Annotated[str, _printable(36)]
CategoryRef = Annotated[str, _printable(40)]
SessionRef = Annotated[str, _printable(64)]
MachineRef = Annotated[str, _printable(63)]
SlugRef = Annotated[str, StringConstraints(pattern=SLUG)]
Link = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x20\x7f]*$")]

# Rates are stored as 32-bit cents: at most 9,999,999.99 an hour.
_PRICE = r"^[0-9]{1,7}(\.[0-9]{1,2})?$"
_AMOUNT = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
_SIGNED_AMOUNT = r"^-?[0-9]{1,10}(\.[0-9]{1,2})?$"
_MULTIPLIER = r"^(10(\.0{1,4})?|[0-9](\.[0-9]{1,4})?)$"
Price = Annotated[
    Decimal, PlainValidator(_decimal_parser(_PRICE)), _decimal_schema(_PRICE, "12.50")
]
Amount = Annotated[
    Decimal, PlainValidator(_decimal_parser(_AMOUNT)), _decimal_schema(_AMOUNT, "12.50")
]
SignedAmount = Annotated[
    Decimal,
    PlainValidator(_decimal_parser(_SIGNED_AMOUNT)),
    _decimal_schema(_SIGNED_AMOUNT, "-5.00"),
]
Multiplier = Annotated[
    Decimal, PlainValidator(_decimal_parser(_MULTIPLIER)), _decimal_schema(_MULTIPLIER, "0.5")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TariffCreate(_Request):
    id: SlugRef
    name: Name
    machine_ids: list[MachineRef] = Field(default_factory=list, max_length=200)


class TariffUpdate(_Request):
    name: Name | None = None
    machine_ids: list[MachineRef] | None = Field(default=None, max_length=200)


class TariffPublic(BaseModel):
    id: str
    name: str
    machine_ids: list[str]


class RateCreate(_Request):
    """A new dated version of a tariff's prices; rates are never edited."""

    tariff_id: SlugRef
    valid_from: date
    category_id: CategoryRef | None = None
    unlocked_per_hour: Price = Decimal(0)
    busy_per_hour: Price = Decimal(0)
    minimum_charge: Price = Decimal(0)
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


class CategoryPricingUpdate(_Request):
    multiplier: Multiplier


class CategoryPricingPublic(BaseModel):
    category_id: str
    name: str
    multiplier: Decimal


class ContributionTypeCreate(_Request):
    id: SlugRef
    name: Name
    unit: Literal["hour", "item"]
    kind: Literal["money", "minutes"]
    value: int = Field(ge=0, le=10_000_000, description="cents or machine minutes per unit")
    automatic_source: Literal["supervision", "training", "maintenance"] | None = None


class ContributionTypeUpdate(_Request):
    name: Name | None = None
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


class ClaimCreate(_Request):
    contribution_type_id: SlugRef
    quantity: int = Field(gt=0, le=100_000, description="minutes (per-hour types) or items")
    description: Text
    link: Link | None = None
    member_id: MemberRef | None = Field(default=None, description="managers: for another member")


class ClaimDecision(_Request):
    approve: bool
    reason: Text


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


class LedgerEntryCreate(_Request):
    member_id: MemberRef
    kind: Literal["topup", "adjust"]
    amount: SignedAmount
    reason: Text


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


class PeriodCreate(_Request):
    starts_on: date
    ends_on: date | None = Field(default=None, description="default: end of the month")


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


class LineAdjust(_Request):
    session_id: SessionRef
    amount: Amount
    reason: Text


class CreditNoteCreate(_Request):
    amount: Amount
    reason: Text


# An amount >= 0 in currency units, as a string with at most 2 decimals ("12.50"): the
# schema says exactly what is accepted.
_Amount = Annotated[str, Field(pattern=r"^[0-9]{1,7}(\.[0-9]{1,2})?$", examples=["5.00"])]


class CategoryPrepaidUpdate(_Request):
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
