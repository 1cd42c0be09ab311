"""SQLAlchemy tables of usage billing and contribution credits (money in integer cents).

Approved statements, their lines, ledger entries and adjustments are protected by
database triggers (migrations 0007_billing and 0013_billing_lines_keyed): the ledger and
the adjustments are append-only, an approved statement and its lines can be neither
changed nor deleted, and a line's statement exists.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.adapters.orm import Base, UsageSession, UtcDateTime, utcnow


class BillingTariff(Base):
    """Machines priced alike; its rates are dated versions of their prices."""

    __tablename__ = "billing_tariff"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class BillingTariffMachine(Base):
    """Which tariff prices a machine (at most one)."""

    __tablename__ = "billing_tariff_machine"

    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), primary_key=True)
    tariff_id: Mapped[str] = mapped_column(ForeignKey("billing_tariff.id"), index=True)


class BillingRate(Base):
    """One dated version of a tariff's prices, for every category or for one."""

    __tablename__ = "billing_rate"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tariff_id: Mapped[str] = mapped_column(ForeignKey("billing_tariff.id"), index=True)
    category_id: Mapped[str | None] = mapped_column(ForeignKey("member_category.id"))
    valid_from: Mapped[date] = mapped_column(Date)
    # The lab's midnight of valid_from, as a UTC instant (set once, at creation).
    valid_from_utc: Mapped[datetime] = mapped_column(UtcDateTime)
    unlocked_cents_per_hour: Mapped[int] = mapped_column(Integer, default=0)
    busy_cents_per_hour: Mapped[int] = mapped_column(Integer, default=0)
    minimum_cents: Mapped[int] = mapped_column(Integer, default=0)
    rounding_minutes: Mapped[int] = mapped_column(Integer, default=1)
    free_minutes: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BillingCategoryPricing(Base):
    """A member category's multiplier on general rates (basis points, 10000 = x1)."""

    __tablename__ = "billing_category_pricing"

    category_id: Mapped[str] = mapped_column(ForeignKey("member_category.id"), primary_key=True)
    multiplier_bp: Mapped[int] = mapped_column(Integer, default=10_000)
    # Prepaid option (migration 0011_prepaid): members start at or above the threshold
    # and their sessions stop at the overdraft bound (docs/billing.md, "Prepaid").
    prepaid: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    prepaid_threshold_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    prepaid_overdraft_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class BillingPrepaidOverdraft(Base):
    """A prepaid member's session that left their balance past the overdraft bound
    (decided offline, or several machines at once): billed in full, flagged here."""

    __tablename__ = "billing_prepaid_overdraft"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(36), index=True)
    machine_id: Mapped[str] = mapped_column(String(63))
    balance_cents: Mapped[int] = mapped_column(BigInteger)  # derived, once the session ended
    overdraft_cents: Mapped[int] = mapped_column(BigInteger)  # the bound at that time
    flagged_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BillingContributionType(Base):
    """A kind of contribution and what it is worth."""

    __tablename__ = "billing_contribution_type"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(10))  # hour | item
    kind: Mapped[str] = mapped_column(String(10))  # money | minutes
    value: Mapped[int] = mapped_column(Integer)
    # supervision | training | maintenance: credited by the sweep without a claim.
    automatic_source: Mapped[str | None] = mapped_column(String(20), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BillingClaim(Base):
    """A member's claimed contribution, approved or rejected by a manager."""

    __tablename__ = "billing_claim"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    contribution_type_id: Mapped[str] = mapped_column(ForeignKey("billing_contribution_type.id"))
    quantity: Mapped[int] = mapped_column(Integer)  # minutes (per-hour types) or items
    description: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decision_reason: Mapped[str | None] = mapped_column(Text)


class BillingLedgerEntry(Base):
    """One entry of a member's hash-chained credits ledger (append-only)."""

    __tablename__ = "billing_ledger_entry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(36), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    minutes: Mapped[int] = mapped_column(Integer, default=0)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    source_type: Mapped[str] = mapped_column(String(30))
    source_id: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("member_id", "seq", name="uq_billing_ledger_entry_member_seq"),
        # One entry per member, source and kind: the credit sweep can run again safely.
        UniqueConstraint(
            "member_id", "source_type", "source_id", "kind",
            name="uq_billing_ledger_entry_source",
        ),
    )  # fmt: skip


class BillingPeriod(Base):
    """A billing period [starts_on, ends_on) in the lab's calendar."""

    __tablename__ = "billing_period"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    starts_on: Mapped[date] = mapped_column(Date, unique=True)
    ends_on: Mapped[date] = mapped_column(Date)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    opened_by: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    computed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Digest of the inputs the drafts were last priced from (billing_sql.pricing_fingerprint).
    priced_fingerprint: Mapped[str | None] = mapped_column(String(64))
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BillingStatement(Base):
    """A member's statement for a period, or a credit note correcting an approved one."""

    __tablename__ = "billing_statement"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"), index=True)
    member_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(12), default="statement")  # | credit_note
    status: Mapped[str] = mapped_column(String(10), default="draft")  # | approved
    # Gapless over every approved statement and credit note; NULL while a draft.
    number: Mapped[int | None] = mapped_column(Integer, unique=True)
    charges_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_applied_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    net_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    refers_to_id: Mapped[int | None] = mapped_column(ForeignKey("billing_statement.id"), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Hash of the ledger entry that spent this statement's credits (an anchor).
    ledger_hash: Mapped[str | None] = mapped_column(String(64))

    # A period's drafts (joined to their lines by member, deleted, summed, approved).
    __table_args__ = (
        Index("ix_billing_statement_period_status_member", "period_id", "status", "member_id"),
    )


class BillingLine(Base):
    """One priced session of a statement.

    Keyed by (statement, session) and without a foreign key (migration
    0013_billing_lines_keyed): a period's lines are written in one statement, and database
    triggers check once per statement that each line's statement exists and is a draft.
    A line's statement is always its session's member's."""

    __tablename__ = "billing_line"

    statement_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(63))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime)
    metered_seconds: Mapped[int] = mapped_column(BigInteger)
    busy_seconds: Mapped[int] = mapped_column(BigInteger)
    billed_minutes: Mapped[int] = mapped_column(BigInteger)
    busy_billed_minutes: Mapped[int] = mapped_column(BigInteger)
    free_minutes: Mapped[int] = mapped_column(BigInteger)
    rate_id: Mapped[int | None] = mapped_column(Integer)
    multiplier_bp: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    computed_cents: Mapped[int] = mapped_column(BigInteger)
    adjustment_reason: Mapped[str | None] = mapped_column(Text)
    # A session of an already closed period, billed in the next open one.
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class BillingAdjustment(Base):
    """The treasurer's amount for one session's line, with a reason (append-only)."""

    __tablename__ = "billing_adjustment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"))
    session_id: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_billing_adjustment_period_session", "period_id", "session_id"),)


# The credit sweep reads the supervised sessions and the maintenance overrides of the last
# months: a few percent of all sessions, found by these partial indexes without a scan.
Index(
    "ix_usage_session_supervised",
    UsageSession.started_at,
    postgresql_where=UsageSession.supervisor_member_id.is_not(None),
    sqlite_where=UsageSession.supervisor_member_id.is_not(None),
)
Index(
    "ix_usage_session_maintenance",
    UsageSession.started_at,
    postgresql_where=text("maintenance_override"),
    sqlite_where=text("maintenance_override"),
)
