"""Queries of usage billing and contribution credits over one SQLAlchemy session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ARRAY, bindparam, cast, delete, func, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FromClause, TableValuedAlias

from server.adapters.billing_sql import on_approved_statement
from server.adapters.orm import Member, Training, TrainingTypeMachine, UsageSession
from server.adapters.orm_billing import (
    BillingAdjustment,
    BillingCategoryPricing,
    BillingClaim,
    BillingContributionType,
    BillingLedgerEntry,
    BillingLine,
    BillingPeriod,
    BillingPrepaidOverdraft,
    BillingRate,
    BillingStatement,
    BillingTariff,
    BillingTariffMachine,
)
from server.domain.billing.ledger import EntryKind, LedgerEntry
from server.domain.billing.metering import RoundingRule, whole_seconds
from server.domain.billing.prepaid import PrepaidRule
from server.domain.billing.rating import MeteredSession, Pricing, Rate


def ledger_entry(row: BillingLedgerEntry) -> LedgerEntry:
    """The domain entry of a stored row."""
    return LedgerEntry(
        member_id=row.member_id,
        seq=row.seq,
        kind=EntryKind(row.kind),
        amount_cents=row.amount_cents,
        minutes=row.minutes,
        actor_id=row.actor_id,
        reason=row.reason,
        source_type=row.source_type,
        source_id=row.source_id,
        at=row.at,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def domain_rate(row: BillingRate) -> Rate:
    return Rate(
        id=str(row.id),
        tariff_id=row.tariff_id,
        valid_from=row.valid_from,
        unlocked_cents_per_hour=row.unlocked_cents_per_hour,
        busy_cents_per_hour=row.busy_cents_per_hour,
        minimum_cents=row.minimum_cents,
        rounding=RoundingRule(row.rounding_minutes),
        free_minutes=row.free_minutes,
        category_id=row.category_id,
    )


@dataclass(frozen=True)
class Balance:
    """A member's (or the lab's) contribution / retribution balance."""

    credits_cents: int
    earned_cents: int
    spent_cents: int
    minutes_given: int
    machine_minutes_used: int


class BillingRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: object) -> None:
        self.session.add(row)

    # -- prices ---------------------------------------------------------------------------

    def tariff(self, tariff_id: str) -> BillingTariff | None:
        return self.session.get(BillingTariff, tariff_id)

    def tariffs(self) -> Sequence[BillingTariff]:
        return self.session.scalars(select(BillingTariff).order_by(BillingTariff.id)).all()

    def tariff_machines(self) -> dict[str, str]:
        """machine -> tariff."""
        rows = self.session.execute(
            select(BillingTariffMachine.machine_id, BillingTariffMachine.tariff_id)
        )
        return {machine: tariff for machine, tariff in rows}

    def set_tariff_machines(self, tariff_id: str, machine_ids: Sequence[str]) -> None:
        self.session.execute(
            delete(BillingTariffMachine).where(BillingTariffMachine.tariff_id == tariff_id)
        )
        self.session.execute(
            delete(BillingTariffMachine).where(BillingTariffMachine.machine_id.in_(machine_ids))
        )
        for machine_id in machine_ids:
            self.session.add(BillingTariffMachine(machine_id=machine_id, tariff_id=tariff_id))

    def rate(self, rate_id: int) -> BillingRate | None:
        return self.session.get(BillingRate, rate_id)

    def rates(self, tariff_id: str | None = None) -> Sequence[BillingRate]:
        query = select(BillingRate).order_by(
            BillingRate.tariff_id, BillingRate.valid_from, BillingRate.id
        )
        if tariff_id:
            query = query.where(BillingRate.tariff_id == tariff_id)
        return self.session.scalars(query).all()

    def rate_version(
        self, tariff_id: str, category_id: str | None, valid_from: date
    ) -> BillingRate | None:
        query = select(BillingRate).where(
            BillingRate.tariff_id == tariff_id,
            BillingRate.valid_from == valid_from,
            BillingRate.category_id.is_(None)
            if category_id is None
            else BillingRate.category_id == category_id,
        )
        return self.session.scalars(query).first()

    def multipliers(self) -> dict[str, int]:
        rows = self.session.execute(
            select(BillingCategoryPricing.category_id, BillingCategoryPricing.multiplier_bp)
        )
        return {category: bp for category, bp in rows}

    def category_pricing(self, category_id: str) -> BillingCategoryPricing | None:
        return self.session.get(BillingCategoryPricing, category_id)

    def pricing(self) -> Pricing:
        return Pricing(
            tariff_of_machine=self.tariff_machines(),
            rates=tuple(domain_rate(r) for r in self.rates()),
            multiplier_bp=self.multipliers(),
        )

    # -- prepaid ----------------------------------------------------------------------------

    def prepaid_rules(self) -> dict[str, PrepaidRule]:
        """category -> its prepaid rule, for the prepaid categories only."""
        query = select(
            BillingCategoryPricing.category_id,
            BillingCategoryPricing.prepaid_threshold_cents,
            BillingCategoryPricing.prepaid_overdraft_cents,
        ).where(BillingCategoryPricing.prepaid.is_(True))
        return {c: PrepaidRule(int(t), int(o)) for c, t, o in self.session.execute(query)}

    def member_categories(self, member_ids: set[str]) -> dict[str, str]:
        """member -> category."""
        if not member_ids:
            return {}
        query = select(Member.id, Member.category).where(Member.id.in_(member_ids))
        return {member: category for member, category in self.session.execute(query)}

    def members_in(self, category_ids: set[str]) -> list[str]:
        """The active members of these categories, by id."""
        query = (
            select(Member.id)
            .where(Member.category.in_(category_ids), Member.active.is_(True))
            .order_by(Member.id)
        )
        return list(self.session.scalars(query))

    def ledger_sums(self, member_ids: set[str]) -> dict[str, int]:
        """member -> sum of their ledger entries (members without one are left out)."""
        query = (
            select(BillingLedgerEntry.member_id, func.sum(BillingLedgerEntry.amount_cents))
            .where(BillingLedgerEntry.member_id.in_(member_ids))
            .group_by(BillingLedgerEntry.member_id)
        )
        return {member: int(total) for member, total in self.session.execute(query)}

    def unsettled_sessions(self, member_ids: set[str]) -> list[MeteredSession]:
        """The members' finished sessions that are on no approved statement."""
        s = UsageSession
        approved = on_approved_statement(s.id, s.member_id)
        query = (
            select(s.id, s.member_id, Member.category, s.machine_id, s.started_at, s.ended_at,
                   s.elapsed_seconds, s.busy_seconds)
            .join(Member, Member.id == s.member_id)
            .where(s.member_id.in_(member_ids), s.ended_at.is_not(None), ~approved)
        )
        return [
            MeteredSession(sid, member, category, machine, started, ended,
                           whole_seconds(elapsed), whole_seconds(busy))
            for sid, member, category, machine, started, ended, elapsed, busy
            in self.session.execute(query)
            if member is not None and ended is not None
        ]

    def member_machines(self, member_id: str) -> set[str]:
        """The machines covered by the member's unrevoked trainings."""
        query = (
            select(TrainingTypeMachine.machine_id)
            .join(Training, Training.training_type_id == TrainingTypeMachine.training_type_id)
            .where(Training.member_id == member_id, Training.revoked_at.is_(None))
        )
        return set(self.session.scalars(query))

    def prepaid_overdraft(self, session_id: str) -> BillingPrepaidOverdraft | None:
        return self.session.get(BillingPrepaidOverdraft, session_id)

    def prepaid_overdrafts(self, member_id: str | None = None) -> Sequence[BillingPrepaidOverdraft]:
        query = select(BillingPrepaidOverdraft).order_by(BillingPrepaidOverdraft.flagged_at)
        if member_id is not None:
            query = query.where(BillingPrepaidOverdraft.member_id == member_id)
        return self.session.scalars(query).all()

    # -- contributions ----------------------------------------------------------------------

    def contribution_type(self, type_id: str) -> BillingContributionType | None:
        return self.session.get(BillingContributionType, type_id)

    def contribution_types(self) -> Sequence[BillingContributionType]:
        query = select(BillingContributionType).order_by(BillingContributionType.id)
        return self.session.scalars(query).all()

    def automatic_types(self) -> dict[str, BillingContributionType]:
        query = select(BillingContributionType).where(
            BillingContributionType.automatic_source.is_not(None),
            BillingContributionType.active.is_(True),
        )
        return {t.automatic_source or "": t for t in self.session.scalars(query)}

    def claim(self, claim_id: int) -> BillingClaim | None:
        return self.session.get(BillingClaim, claim_id)

    def claims(
        self, *, member_id: str | None = None, status: str | None = None
    ) -> Sequence[BillingClaim]:
        query = select(BillingClaim).order_by(BillingClaim.id.desc())
        if member_id:
            query = query.where(BillingClaim.member_id == member_id)
        if status:
            query = query.where(BillingClaim.status == status)
        return self.session.scalars(query.limit(1000)).all()

    # -- ledger -----------------------------------------------------------------------------

    def chain(self, member_id: str) -> list[LedgerEntry]:
        query = select(BillingLedgerEntry).where(BillingLedgerEntry.member_id == member_id)
        return [
            ledger_entry(r) for r in self.session.scalars(query.order_by(BillingLedgerEntry.seq))
        ]

    def chains(self) -> dict[str, list[LedgerEntry]]:
        query = select(BillingLedgerEntry).order_by(
            BillingLedgerEntry.member_id, BillingLedgerEntry.seq
        )
        result: dict[str, list[LedgerEntry]] = {}
        for row in self.session.scalars(query):
            result.setdefault(row.member_id, []).append(ledger_entry(row))
        return result

    def append(self, entry: LedgerEntry) -> BillingLedgerEntry:
        row = BillingLedgerEntry(
            member_id=entry.member_id, seq=entry.seq, kind=entry.kind.value,
            amount_cents=entry.amount_cents, minutes=entry.minutes, actor_id=entry.actor_id,
            reason=entry.reason, source_type=entry.source_type, source_id=entry.source_id,
            at=entry.at, prev_hash=entry.prev_hash, hash=entry.hash,
        )  # fmt: skip
        self.session.add(row)
        return row

    def append_all(self, entries: Sequence[LedgerEntry]) -> None:
        """Insert the entries, in order, without row objects: on PostgreSQL in one
        statement (one per row took seconds for a first sweep's 10,000 entries)."""
        rows = [
            {
                "member_id": e.member_id, "seq": e.seq, "kind": e.kind.value,
                "amount_cents": e.amount_cents, "minutes": e.minutes, "actor_id": e.actor_id,
                "reason": e.reason, "source_type": e.source_type, "source_id": e.source_id,
                "at": e.at, "prev_hash": e.prev_hash, "hash": e.hash,
            }
            for e in entries
        ]  # fmt: skip
        if not rows:
            return
        if self.session.get_bind().dialect.name != "postgresql":
            self.session.execute(insert(BillingLedgerEntry), rows)
            return
        values = _unnest(BillingLedgerEntry.__table__, rows)
        self.session.execute(
            insert(BillingLedgerEntry).from_select(list(rows[0]), select(*values.c))
        )

    def balances(self) -> dict[str, int]:
        query = select(
            BillingLedgerEntry.member_id, func.sum(BillingLedgerEntry.amount_cents)
        ).group_by(BillingLedgerEntry.member_id)
        return {member: int(total) for member, total in self.session.execute(query)}

    def credited_sources(self, source_type: str) -> set[tuple[str, str]]:
        """(member, source id) of the earn entries already written for a source type."""
        query = select(BillingLedgerEntry.member_id, BillingLedgerEntry.source_id).where(
            BillingLedgerEntry.source_type == source_type, BillingLedgerEntry.kind == "earn"
        )
        return {(m, s) for m, s in self.session.execute(query)}

    def supervised_sessions(self, since: datetime) -> list[tuple[str, str, float, datetime]]:
        """(session, supervisor, elapsed seconds, end) of finished sessions a member
        supervised."""
        query = (
            select(
                UsageSession.id,
                UsageSession.supervisor_member_id,
                UsageSession.elapsed_seconds,
                UsageSession.ended_at,
            )
            .join(Member, Member.id == UsageSession.supervisor_member_id)
            .where(UsageSession.ended_at.is_not(None), UsageSession.started_at >= since)
            .order_by(UsageSession.started_at, UsageSession.id)
        )
        rows = self.session.execute(query)
        return [(sid, str(sup), float(el), end) for sid, sup, el, end in rows if end is not None]

    def maintenance_sessions(self, since: datetime) -> list[tuple[str, str, float, datetime]]:
        """(session, member, elapsed seconds, end) of finished maintenance overrides."""
        query = (
            select(
                UsageSession.id,
                UsageSession.member_id,
                UsageSession.elapsed_seconds,
                UsageSession.ended_at,
            )
            .where(
                UsageSession.ended_at.is_not(None),
                UsageSession.maintenance_override,  # as the partial index says it
                UsageSession.member_id.is_not(None),
                UsageSession.started_at >= since,
            )
            .order_by(UsageSession.started_at, UsageSession.id)
        )
        rows = self.session.execute(query)
        return [(sid, str(m), float(el), end) for sid, m, el, end in rows if end is not None]

    def trainings_given(self, since: datetime) -> list[tuple[int, str, str, datetime]]:
        """(training, trainer, trainee, granted at) of trainings a member granted another."""
        query = (
            select(Training.id, Training.granted_by, Training.member_id, Training.granted_at)
            .join(Member, Member.id == Training.granted_by)
            .where(Training.granted_at >= since, Training.granted_by != Training.member_id)
            .order_by(Training.granted_at, Training.id)
        )
        rows = self.session.execute(query)
        return [(tid, str(by), member, at) for tid, by, member, at in rows]

    def balance(self, member_id: str | None = None) -> Balance:
        """Credits, money earned and spent, time given and machine time used."""
        ledger = select(
            func.coalesce(func.sum(BillingLedgerEntry.amount_cents), 0),
            func.coalesce(func.sum(BillingLedgerEntry.minutes), 0),
        )
        earned = select(func.coalesce(func.sum(BillingLedgerEntry.amount_cents), 0)).where(
            BillingLedgerEntry.amount_cents > 0
        )
        spent = select(func.coalesce(func.sum(BillingLedgerEntry.amount_cents), 0)).where(
            BillingLedgerEntry.kind == "spend"
        )
        used = select(func.coalesce(func.sum(UsageSession.elapsed_seconds), 0)).where(
            UsageSession.ended_at.is_not(None)
        )
        if member_id is not None:
            ledger = ledger.where(BillingLedgerEntry.member_id == member_id)
            earned = earned.where(BillingLedgerEntry.member_id == member_id)
            spent = spent.where(BillingLedgerEntry.member_id == member_id)
            used = used.where(UsageSession.member_id == member_id)
        total, minutes = self.session.execute(ledger).one()
        return Balance(
            credits_cents=int(total),
            earned_cents=int(self.session.scalar(earned) or 0),
            spent_cents=-int(self.session.scalar(spent) or 0),
            minutes_given=int(minutes),
            machine_minutes_used=int(float(self.session.scalar(used) or 0) // 60),
        )

    # -- periods, statements ------------------------------------------------------------------

    def period(self, period_id: int) -> BillingPeriod | None:
        return self.session.get(BillingPeriod, period_id)

    def periods(self) -> Sequence[BillingPeriod]:
        return self.session.scalars(select(BillingPeriod).order_by(BillingPeriod.starts_on)).all()

    def overlapping(self, starts_on: date, ends_on: date) -> BillingPeriod | None:
        query = select(BillingPeriod).where(
            BillingPeriod.starts_on < ends_on, BillingPeriod.ends_on > starts_on
        )
        return self.session.scalars(query).first()

    def statement(self, statement_id: int) -> BillingStatement | None:
        return self.session.get(BillingStatement, statement_id)

    def statements(
        self,
        *,
        period_id: int | None = None,
        member_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
    ) -> Sequence[BillingStatement]:
        query = select(BillingStatement).order_by(BillingStatement.id)
        if period_id is not None:
            query = query.where(BillingStatement.period_id == period_id)
        if member_id is not None:
            query = query.where(BillingStatement.member_id == member_id)
        if status is not None:
            query = query.where(BillingStatement.status == status)
        if kind is not None:
            query = query.where(BillingStatement.kind == kind)
        return self.session.scalars(query).all()

    def update_statements(self, rows: list[dict[str, Any]], **same: Any) -> None:
        """Set the given columns of each statement (`id` and the same keys in every row)
        and the columns of `same` to one value for all: one UPDATE on PostgreSQL (each
        column's values as one array), one batch elsewhere."""
        if not rows:
            return
        if self.session.get_bind().dialect.name != "postgresql":
            self.session.execute(update(BillingStatement), [{**row, **same} for row in rows])
            return
        v = _unnest(BillingStatement.__table__, rows)
        values = {c: v.c[c] for c in rows[0] if c != "id"} | same
        self.session.execute(
            update(BillingStatement).where(BillingStatement.id == v.c.id).values(values)
        )

    def lines(self, statement_id: int) -> Sequence[BillingLine]:
        query = select(BillingLine).where(BillingLine.statement_id == statement_id)
        return self.session.scalars(
            query.order_by(BillingLine.started_at, BillingLine.session_id)
        ).all()

    def period_lines(self, period_id: int) -> Sequence[Any]:
        """(line, member id, statement number) of every line of the period's statements."""
        query = (
            select(BillingLine, BillingStatement.member_id, BillingStatement.number)
            .join(BillingStatement, BillingStatement.id == BillingLine.statement_id)
            .where(BillingStatement.period_id == period_id)
            .order_by(BillingStatement.member_id, BillingLine.started_at, BillingLine.session_id)
        )
        return self.session.execute(query).all()

    def delete_drafts(self, period_id: int) -> None:
        drafts = select(BillingStatement.id).where(
            BillingStatement.period_id == period_id, BillingStatement.status == "draft"
        )
        self.session.execute(delete(BillingLine).where(BillingLine.statement_id.in_(drafts)))
        self.session.execute(
            delete(BillingStatement).where(
                BillingStatement.period_id == period_id, BillingStatement.status == "draft"
            )
        )

    def draft_charges(self, period_id: int) -> list[tuple[int, str, int]]:
        """(statement id, member, sum of line amounts) of the period's drafts."""
        query = (
            select(
                BillingStatement.id,
                BillingStatement.member_id,
                func.coalesce(func.sum(BillingLine.amount_cents), 0),
            )
            .outerjoin(BillingLine, BillingLine.statement_id == BillingStatement.id)
            .where(BillingStatement.period_id == period_id, BillingStatement.status == "draft")
            .group_by(BillingStatement.id, BillingStatement.member_id)
            .order_by(BillingStatement.id)
        )
        return [(sid, member, int(total)) for sid, member, total in self.session.execute(query)]

    def drafts(self, period_id: int) -> list[tuple[int, str, int]]:
        """(statement id, member, charges as last computed) of the period's drafts."""
        query = (
            select(BillingStatement.id, BillingStatement.member_id, BillingStatement.charges_cents)
            .where(BillingStatement.period_id == period_id, BillingStatement.status == "draft")
            .order_by(BillingStatement.id)
        )
        return [(sid, member, int(charges)) for sid, member, charges in self.session.execute(query)]

    def last_number(self) -> int:
        """The last document number given; on PostgreSQL, also takes the numbering lock
        until the transaction ends, so that concurrent approvals number one after the
        other."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(8008)"))
        return int(self.session.scalar(select(func.max(BillingStatement.number))) or 0)

    def credit_notes_total(self, statement_id: int) -> int:
        query = select(func.coalesce(func.sum(BillingStatement.charges_cents), 0)).where(
            BillingStatement.refers_to_id == statement_id
        )
        return -int(self.session.scalar(query) or 0)

    def add_adjustment(self, adjustment: BillingAdjustment) -> None:
        self.session.add(adjustment)

    def member_names(self, member_ids: set[str]) -> dict[str, str]:
        if not member_ids:
            return {}
        query = select(Member.id, Member.name).where(Member.id.in_(member_ids))
        return {m: n for m, n in self.session.execute(query)}

    def totals(self, period_id: int) -> dict[str, list[tuple[str, int, int]]]:
        """Per machine, per member category: (key, lines, cents); per contribution
        type: (type, entries, cents) of credits earned during the period."""
        period = self.period(period_id)
        by_machine = (
            select(BillingLine.machine_id, func.count(), func.sum(BillingLine.amount_cents))
            .join(BillingStatement, BillingStatement.id == BillingLine.statement_id)
            .where(BillingStatement.period_id == period_id)
            .group_by(BillingLine.machine_id)
            .order_by(BillingLine.machine_id)
        )
        by_category = (
            select(Member.category, func.count(), func.sum(BillingLine.amount_cents))
            .select_from(BillingLine)
            .join(BillingStatement, BillingStatement.id == BillingLine.statement_id)
            .join(Member, Member.id == BillingStatement.member_id)
            .where(BillingStatement.period_id == period_id)
            .group_by(Member.category)
            .order_by(Member.category)
        )
        result = {
            "machine": [(k, int(n), int(c or 0)) for k, n, c in self.session.execute(by_machine)],
            "category": [(k, int(n), int(c or 0)) for k, n, c in self.session.execute(by_category)],
            "contribution_type": [],
        }
        if period is not None:
            result["contribution_type"] = self._earned_by_type(period.starts_at, period.ends_at)
        return result

    def _earned_by_type(self, start: datetime, end: datetime) -> list[tuple[str, int, int]]:
        e = BillingLedgerEntry
        earned = select(e.source_type, e.source_id, e.reason, e.amount_cents).where(
            e.kind == "earn", e.at >= start, e.at < end
        )
        claims = {c.id: c.contribution_type_id for c in self.session.scalars(select(BillingClaim))}
        automatic = {
            t.automatic_source: t.id for t in self.contribution_types() if t.automatic_source
        }
        sums: dict[str, list[int]] = {}
        for source_type, source_id, _reason, cents in self.session.execute(earned):
            if source_type == "claim":
                key = claims.get(int(source_id), "claim")
            else:
                key = automatic.get(AUTOMATIC_OF_SOURCE.get(source_type, ""), source_type)
            entry = sums.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += int(cents)
        return [(k, n, c) for k, (n, c) in sorted(sums.items())]


def _unnest(table: FromClause, rows: list[dict[str, Any]]) -> TableValuedAlias:
    """The rows (the same keys in each) as PostgreSQL's `unnest` of one array per
    column, aliased `v`: a statement over them sends one parameter a column, not a
    row's worth of parameters per row."""
    columns = list(rows[0])
    arrays = [
        cast(
            bindparam(c, [row[c] for row in rows], type_=ARRAY(table.c[c].type)),
            ARRAY(table.c[c].type),
        )
        for c in columns
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="v")


# The ledger's source type of an automatic credit -> the AutomaticSource it comes from.
AUTOMATIC_OF_SOURCE = {
    "supervised_session": "supervision",
    "maintenance_session": "maintenance",
    "training": "training",
}
