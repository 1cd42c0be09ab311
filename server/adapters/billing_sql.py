"""The period's draft statements, priced in SQL (one INSERT ... SELECT, no Python row loop).

The formulas are those of `server.domain.billing.rating`, in integer arithmetic, so that
the database and the pure rules give the same cents (a test checks it on both engines).

On PostgreSQL, `pricing_fingerprint` sums a hash of every input of the pricing (each
candidate session with its member's category, multiplier and tariff; the rates, tariffs,
multipliers and the period's adjustments), so that a recompute whose inputs did not
change keeps the drafts it already priced instead of pricing them again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from server.adapters.orm import Member, UsageSession, UtcDateTime
from server.adapters.orm_billing import (
    BillingAdjustment,
    BillingCategoryPricing,
    BillingLine,
    BillingPeriod,
    BillingRate,
    BillingStatement,
    BillingTariff,
    BillingTariffMachine,
)
from server.domain.billing.money import BASIS


class whole_seconds(FunctionElement[int]):  # noqa: N801 - reads as a SQL function
    """Whole seconds of a measured (float) duration, fractions dropped, never negative."""

    type = BigInteger()
    inherit_cache = True


@compiles(whole_seconds)
def _whole_seconds_sqlite(element: whole_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"(CASE WHEN {value} > 0 THEN CAST({value} AS INTEGER) ELSE 0 END)"


@compiles(whole_seconds, "postgresql")
def _whole_seconds_pg(element: whole_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"(CASE WHEN {value} > 0 THEN CAST(FLOOR({value}) AS BIGINT) ELSE 0 END)"


def on_approved_statement(session_id: Any, member_id: Any) -> ColumnElement[bool]:
    """Whether the session is on an approved statement: one of its member's (a line's
    statement is always its session's member's), found by the lines' key."""
    return (
        exists()
        .where(BillingStatement.member_id == member_id)
        .where(BillingStatement.status == "approved")
        .where(BillingLine.statement_id == BillingStatement.id)
        .where(BillingLine.session_id == session_id)
    )


def _unbilled_condition(period: BillingPeriod, *, approved: bool = True) -> ColumnElement[bool]:
    """Finished sessions of the period, and late ones of a closed period before it,
    not already on an approved statement (unless `approved` is false)."""
    s = UsageSession
    closed, between = aliased(BillingPeriod), aliased(BillingPeriod)
    # By session alone: with the member too, PostgreSQL may sort every session by member
    # and id for a merge anti-join, on top of the window's sort.
    approved_line = (
        exists()
        .where(BillingLine.session_id == s.id)
        .where(BillingLine.statement_id == BillingStatement.id)
        .where(BillingStatement.status == "approved")
    )
    in_closed_period = (
        exists()
        .where(closed.status == "closed")
        .where(s.started_at >= closed.starts_at, s.started_at < closed.ends_at)
    )
    open_period_between = (
        exists()
        .where(between.status == "open")
        .where(between.starts_at > s.started_at, between.starts_at < period.starts_at)
    )
    return and_(
        s.ended_at.is_not(None),
        s.member_id.is_not(None),
        ~approved_line if approved else true(),
        or_(
            and_(s.started_at >= period.starts_at, s.started_at < period.ends_at),
            and_(s.started_at < period.starts_at, in_closed_period, ~open_period_between),
        ),
    )


def _candidates(period: BillingPeriod) -> Any:
    s = UsageSession
    # Each tariff's number (1, 2, …): the window partitions by it, integers sorting
    # faster than the tariffs' text ids.
    tm = select(
        BillingTariffMachine.machine_id,
        BillingTariffMachine.tariff_id,
        func.dense_rank().over(order_by=BillingTariffMachine.tariff_id).label("tariff_no"),
    ).subquery("tariff_machine")
    return (
        select(
            s.id.label("session_id"),
            s.member_id,
            s.machine_id,
            s.started_at,
            s.ended_at,
            whole_seconds(s.elapsed_seconds).label("secs"),
            whole_seconds(s.busy_seconds).label("busy_secs"),
            Member.category.label("category_id"),
            func.coalesce(BillingCategoryPricing.multiplier_bp, BASIS).label("multiplier"),
            tm.c.tariff_id,
            tm.c.tariff_no,
            case((s.started_at < period.starts_at, True), else_=False).label("late"),
        )
        .join(Member, Member.id == s.member_id)
        .outerjoin(BillingCategoryPricing, BillingCategoryPricing.category_id == Member.category)
        .outerjoin(tm, tm.c.machine_id == s.machine_id)
        .where(_unbilled_condition(period))
        .subquery("candidate")
    )


def _rate_windows() -> Any:
    r = BillingRate
    return select(
        r.id,
        r.tariff_id,
        r.category_id,
        r.valid_from_utc.label("from_utc"),
        func.lead(r.valid_from_utc)
        .over(partition_by=(r.tariff_id, r.category_id), order_by=(r.valid_from_utc, r.id))
        .label("to_utc"),
        r.unlocked_cents_per_hour.label("pu"),
        r.busy_cents_per_hour.label("pb"),
        r.minimum_cents.label("minimum"),
        r.rounding_minutes.label("step"),
        r.free_minutes.label("free"),
    ).subquery("rate_window")


def _rated(period: BillingPeriod) -> Any:
    """Candidates with their rate and billed minutes."""
    c = _candidates(period)
    windows = _rate_windows()
    specific, general = windows.alias("specific"), windows.alias("general")

    def in_force(w: Any, category: Any) -> ColumnElement[bool]:
        return and_(
            w.c.tariff_id == c.c.tariff_id,
            category,
            c.c.started_at >= w.c.from_utc,
            or_(w.c.to_utc.is_(None), c.c.started_at < w.c.to_utc),
        )

    has_specific = specific.c.id.is_not(None)

    def pick(name: str) -> Any:
        return case((has_specific, specific.c[name]), else_=general.c[name])

    rate_id = pick("id")
    step = func.coalesce(pick("step"), 1)

    def billed(seconds: Any) -> Any:
        return case((rate_id.is_(None), 0), else_=(seconds + step * 60 - 1) // (step * 60) * step)

    return (
        select(
            c,
            rate_id.label("rate_id"),
            case((has_specific, BASIS), else_=c.c.multiplier).label("rate_multiplier"),
            func.coalesce(pick("pu"), 0).label("pu"),
            func.coalesce(pick("pb"), 0).label("pb"),
            func.coalesce(pick("minimum"), 0).label("minimum"),
            func.coalesce(pick("free"), 0).label("free"),
            billed(c.c.secs).label("billed"),
            billed(c.c.busy_secs).label("busy_billed"),
        )
        .outerjoin(specific, in_force(specific, specific.c.category_id == c.c.category_id))
        .outerjoin(general, in_force(general, general.c.category_id.is_(None)))
        .subquery("rated")
    )


def _priced(period: BillingPeriod, session_order: Any) -> Any:
    """The rated sessions with their member's draft (`statement_id`) and their price."""
    r = _rated(period)
    draft = and_(
        BillingStatement.period_id == period.id,
        BillingStatement.member_id == r.c.member_id,
        BillingStatement.status == "draft",
        BillingStatement.kind == "statement",
    )
    # The allowance is per member and tariff: per draft (one a member) and tariff number,
    # integer keys, cheaper to sort by than the text ids. SUM of integers is NUMERIC in
    # PostgreSQL: back to integers for the divisions. The order is total (the session id
    # breaks ties), so a ROWS frame sums the same as the default RANGE one, without
    # looking for peer rows.
    running = func.sum(r.c.billed).over(
        partition_by=(BillingStatement.id, r.c.tariff_no),
        order_by=(r.c.started_at, session_order(r.c.session_id)),
        rows=(None, 0),
    )
    with_running = (
        select(
            r, BillingStatement.id.label("statement_id"), cast(running, BigInteger).label("running")
        )
        .join(BillingStatement, draft)
        .subquery("with_running")
    )
    w = with_running
    left = w.c.free - (w.c.running - w.c.billed)
    free = case((left <= 0, 0), (left >= w.c.billed, w.c.billed), else_=left)
    with_free = select(w, free.label("free_used")).subquery("with_free")
    f = with_free
    raw = f.c.pu * (f.c.billed - f.c.free_used) + f.c.pb * f.c.busy_billed
    computed = (2 * raw * f.c.rate_multiplier + 60 * BASIS) // (2 * 60 * BASIS)
    amount = case((and_(computed > 0, computed < f.c.minimum), f.c.minimum), else_=computed)
    return select(f, amount.label("computed")).subquery("priced")


LINE_COLUMNS = [
    "statement_id",
    "session_id",
    "machine_id",
    "started_at",
    "ended_at",
    "metered_seconds",
    "busy_seconds",
    "billed_minutes",
    "busy_billed_minutes",
    "free_minutes",
    "rate_id",
    "multiplier_bp",
    "amount_cents",
    "computed_cents",
    "adjustment_reason",
    "late",
]


# The priced columns that become the lines' session_id … multiplier_bp.
_PRICED_COLUMNS = (
    "session_id", "machine_id", "started_at", "ended_at", "secs", "busy_secs", "billed",
    "busy_billed", "free_used", "rate_id", "rate_multiplier",
)  # fmt: skip


def insert_draft_lines(
    session: Session, period: BillingPeriod, *, currency: str, at: datetime
) -> None:
    """Create the period's draft statements (one per member with unbilled sessions,
    totals still zero) and their priced lines, adjustments applied."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        _tune_for_one_big_statement(session)
    members = select(_candidates(period).c.member_id).distinct().subquery("billed_member")
    # Ids in member order: the lines leave the window sorted by member, so they reach the
    # lines' key (statement, session) in the key's order, near its right edge.
    session.execute(
        insert(BillingStatement).from_select(
            ["period_id", "member_id", "kind", "status", "currency", "computed_at"],
            select(
                literal(period.id),
                members.c.member_id,
                literal("statement"),
                literal("draft"),
                literal(currency),
                literal(at, UtcDateTime()),
            ).order_by(members.c.member_id),
        )
    )
    if dialect == "postgresql":
        # The pricing joins every session to these drafts: planned from statistics that
        # predate them, PostgreSQL may scan the drafts once per session.
        session.execute(text("ANALYZE billing_statement"))
    adjusted = exists().where(BillingAdjustment.period_id == period.id)
    session.execute(
        draft_lines_insert(period, dialect, adjusted=bool(session.scalar(select(adjusted))))
    )


def draft_lines_insert(period: BillingPeriod, dialect: str, *, adjusted: bool = True) -> Any:
    """The one INSERT ... SELECT that prices the period's sessions into the lines of its
    drafts (which must exist); `bench/close_period.py --explain` shows its plan.
    `adjusted`: whether the period has adjustments to apply (else the join to them is
    left out)."""

    def session_order(col: Any) -> Any:
        # Ties on the start instant are ordered bytewise, as Python orders strings.
        return col.collate("C") if dialect == "postgresql" else col

    rows = _line_rows(period, _priced(period, session_order), adjusted=adjusted)
    return insert(BillingLine).from_select(LINE_COLUMNS, rows)


def _line_rows(period: BillingPeriod, p: Any, *, adjusted: bool) -> Any:
    """The priced sessions as lines of their member's draft, the latest adjustment
    applied."""
    if not adjusted:
        return select(
            p.c.statement_id, *(p.c[c] for c in _PRICED_COLUMNS), p.c.computed,
            p.c.computed, null(), p.c.late,
        )  # fmt: skip
    latest = (
        select(func.max(BillingAdjustment.id))
        .where(BillingAdjustment.period_id == period.id)
        .group_by(BillingAdjustment.session_id)
    )
    adjustment = (
        select(
            BillingAdjustment.session_id, BillingAdjustment.amount_cents, BillingAdjustment.reason
        )
        .where(BillingAdjustment.id.in_(latest))
        .subquery("adjustment")
    )
    return select(
        p.c.statement_id,
        *(p.c[c] for c in _PRICED_COLUMNS),
        func.coalesce(adjustment.c.amount_cents, p.c.computed),
        p.c.computed,
        adjustment.c.reason,
        p.c.late,
    ).outerjoin(adjustment, adjustment.c.session_id == p.c.session_id)


def _tune_for_one_big_statement(session: Session) -> None:
    """Settings of this transaction for statements over a whole period's sessions."""
    # The window over the period's sessions sorts them all: in memory, not on disk.
    session.execute(text("SET LOCAL work_mem = '256MB'"))
    # JIT compiling such a plan costs seconds (3 s of 10 at a million sessions) and saves
    # less than that on these simple expressions.
    session.execute(text("SET LOCAL jit = off"))


def _table_digest(session: Session, *columns: Any) -> str:
    """Every row of a small table (rates, tariffs…), as text, in a stable order."""
    rows = session.execute(select(*columns).order_by(*columns)).all()
    return repr([tuple(str(v) for v in row) for row in rows])


def pricing_fingerprint(session: Session, period: BillingPeriod, *, currency: str) -> str | None:
    """A digest of everything the period's drafts are priced from, or None where the
    engine has no hash function in SQL (SQLite: the drafts are then always priced again).

    The period's sessions (and the late ones it would take) and the members are summed
    in SQL: a count and the sum of a 64-bit hash of each row's fields, one pass, no row
    sent to Python. Which sessions are already on an approved statement is covered by
    the number of approved statements (an approval anywhere prices again). The price
    tables, the periods and the period's adjustments are small and read whole."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    _tune_for_one_big_statement(session)
    s, m = UsageSession, Member
    session_fields = func.concat_ws(
        "|", s.id, s.member_id, s.machine_id, s.started_at, s.ended_at, s.elapsed_seconds,
        s.busy_seconds,
    )  # fmt: skip
    sessions = select(func.count(), func.sum(func.hashtextextended(session_fields, 0))).where(
        _unbilled_condition(period, approved=False)
    )
    members = select(
        func.count(), func.sum(func.hashtextextended(func.concat_ws("|", m.id, m.category), 0))
    )
    approved = select(func.count()).where(BillingStatement.status == "approved")
    r, a, bp = BillingRate, BillingAdjustment, BillingPeriod
    rates = (
        r.id, r.tariff_id, r.category_id, r.valid_from_utc, r.unlocked_cents_per_hour,
        r.busy_cents_per_hour, r.minimum_cents, r.rounding_minutes, r.free_minutes,
    )  # fmt: skip
    adjustments = select(func.count(), func.max(a.id)).where(a.period_id == period.id)
    parts = [
        currency,
        repr(session.execute(sessions).one()),
        repr(session.execute(members).one()),
        repr(session.scalar(approved)),
        repr(session.execute(adjustments).one()),
        _table_digest(session, bp.id, bp.starts_at, bp.ends_at, bp.status),
        _table_digest(session, *rates),
        _table_digest(session, BillingTariff.id),
        _table_digest(session, BillingTariffMachine.machine_id, BillingTariffMachine.tariff_id),
        _table_digest(
            session, BillingCategoryPricing.category_id, BillingCategoryPricing.multiplier_bp
        ),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
