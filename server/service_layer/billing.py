"""Handlers of usage billing: tariffs, rates, category multipliers, periods, statements."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.adapters.billing_sql import insert_draft_lines, pricing_fingerprint
from server.adapters.orm_billing import (
    BillingAdjustment,
    BillingCategoryPricing,
    BillingPeriod,
    BillingRate,
    BillingStatement,
    BillingTariff,
)
from server.domain.access import Role
from server.domain.billing.ledger import EntryKind
from server.domain.billing.metering import (
    RoundingRule,
    check_billing_day,
    day_start,
    month_bounds,
)
from server.domain.billing.policy import BillingPolicy
from server.domain.billing.statements import credits_to_apply
from server.domain.errors import ConflictError, DomainError, NotFoundError
from server.service_layer import billing_commands as bc
from server.service_layer import credits, guards, prepaid
from server.service_layer.audit import record
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

IMMUTABLE = "an approved statement is immutable: correct it with a credit note"


# -- prices ---------------------------------------------------------------------------------


def add_tariff(cmd: bc.AddTariff, uow: SqlAlchemyUnitOfWork) -> str:
    guards.require(cmd.actor, Role.TREASURER)
    credits.slug(cmd.tariff_id, "a tariff id")
    if uow.billing.tariff(cmd.tariff_id):
        raise ConflictError(f"tariff {cmd.tariff_id} already exists")
    machines = sorted({guards.machine(uow, m).id for m in cmd.machine_ids})
    uow.billing.add(BillingTariff(id=cmd.tariff_id, name=cmd.name))
    uow.flush()
    uow.billing.set_tariff_machines(cmd.tariff_id, machines)
    record(
        uow,
        actor=cmd.actor,
        action="billing.tariff.create",
        object_type="tariff",
        object_id=cmd.tariff_id,
        before=None,
        after={"machines": machines},
        at=cmd.at,
    )
    uow.commit()
    return cmd.tariff_id


def update_tariff(cmd: bc.UpdateTariff, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.TREASURER)
    tariff = uow.billing.tariff(cmd.tariff_id)
    if tariff is None:
        raise NotFoundError(f"no tariff {cmd.tariff_id}")
    current = sorted(m for m, t in uow.billing.tariff_machines().items() if t == tariff.id)
    before: dict[str, Any] = {"name": tariff.name, "machines": current}
    if cmd.name is not None:
        tariff.name = cmd.name
    machines = current
    if cmd.machine_ids is not None:
        machines = sorted({guards.machine(uow, m).id for m in cmd.machine_ids})
        uow.billing.set_tariff_machines(tariff.id, machines)
    record(
        uow,
        actor=cmd.actor,
        action="billing.tariff.update",
        object_type="tariff",
        object_id=tariff.id,
        before=before,
        after={"name": tariff.name, "machines": machines},
        at=cmd.at,
    )
    uow.commit()


def add_rate(cmd: bc.AddRate, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.TREASURER)
    if uow.billing.tariff(cmd.tariff_id) is None:
        raise NotFoundError(f"no tariff {cmd.tariff_id}")
    if cmd.category_id is not None and uow.categories.get(cmd.category_id) is None:
        raise NotFoundError(f"no member category {cmd.category_id}")
    amounts = (
        cmd.unlocked_cents_per_hour,
        cmd.busy_cents_per_hour,
        cmd.minimum_cents,
        cmd.free_minutes,
    )
    if any(a < 0 for a in amounts):
        raise DomainError("prices, minimum charge and free minutes are never negative")
    try:
        RoundingRule(cmd.rounding_minutes)
        check_billing_day(cmd.valid_from)
    except ValueError as exc:
        raise DomainError(str(exc)) from exc
    if uow.billing.rate_version(cmd.tariff_id, cmd.category_id, cmd.valid_from):
        raise ConflictError(
            f"tariff {cmd.tariff_id} already has a rate from {cmd.valid_from}: rates are "
            "never edited, add one from another date"
        )
    rate = BillingRate(
        tariff_id=cmd.tariff_id,
        category_id=cmd.category_id,
        valid_from=cmd.valid_from,
        valid_from_utc=day_start(cmd.valid_from, cmd.policy.tz),
        unlocked_cents_per_hour=cmd.unlocked_cents_per_hour,
        busy_cents_per_hour=cmd.busy_cents_per_hour,
        minimum_cents=cmd.minimum_cents,
        rounding_minutes=cmd.rounding_minutes,
        free_minutes=cmd.free_minutes,
        created_by=cmd.actor.member_id if cmd.actor else None,
        created_at=cmd.at,
    )
    uow.billing.add(rate)
    uow.flush()
    record(
        uow,
        actor=cmd.actor,
        action="billing.rate.create",
        object_type="rate",
        object_id=rate.id,
        before=None,
        after=rate_facts(rate),
        at=cmd.at,
    )
    uow.commit()
    return rate.id


def rate_facts(rate: BillingRate) -> dict[str, Any]:
    return {
        "tariff_id": rate.tariff_id,
        "category_id": rate.category_id,
        "valid_from": rate.valid_from.isoformat(),
        "unlocked_cents_per_hour": rate.unlocked_cents_per_hour,
        "busy_cents_per_hour": rate.busy_cents_per_hour,
        "minimum_cents": rate.minimum_cents,
        "rounding_minutes": rate.rounding_minutes,
        "free_minutes": rate.free_minutes,
    }


def set_category_multiplier(cmd: bc.SetCategoryMultiplier, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.TREASURER)
    if uow.categories.get(cmd.category_id) is None:
        raise NotFoundError(f"no member category {cmd.category_id}")
    if not 0 <= cmd.multiplier_bp <= 100_000:
        raise DomainError("a multiplier is from 0 to 10")
    row = uow.billing.category_pricing(cmd.category_id)
    before = {"multiplier_bp": row.multiplier_bp} if row else None
    if row is None:
        row = BillingCategoryPricing(category_id=cmd.category_id, multiplier_bp=cmd.multiplier_bp)
        uow.billing.add(row)
    row.multiplier_bp = cmd.multiplier_bp
    record(
        uow,
        actor=cmd.actor,
        action="billing.category.multiplier",
        object_type="category",
        object_id=cmd.category_id,
        before=before,
        after={"multiplier_bp": cmd.multiplier_bp},
        at=cmd.at,
    )
    uow.commit()


# -- periods --------------------------------------------------------------------------------


def open_period(cmd: bc.OpenPeriod, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.TREASURER)
    try:
        ends_on = check_billing_day(
            cmd.ends_on or month_bounds(check_billing_day(cmd.starts_on))[1]
        )
    except ValueError as exc:
        raise DomainError(str(exc)) from exc
    if ends_on <= cmd.starts_on:
        raise DomainError("a period ends after it starts")
    if (ends_on - cmd.starts_on).days > 366:
        raise DomainError("a period is at most a year")
    clash = uow.billing.overlapping(cmd.starts_on, ends_on)
    if clash is not None:
        raise ConflictError(f"overlaps period {clash.id} ({clash.starts_on} to {clash.ends_on})")
    period = BillingPeriod(
        starts_on=cmd.starts_on,
        ends_on=ends_on,
        starts_at=day_start(cmd.starts_on, cmd.policy.tz),
        ends_at=day_start(ends_on, cmd.policy.tz),
        status="open",
        opened_by=cmd.actor.member_id if cmd.actor else None,
        opened_at=cmd.at,
    )
    uow.billing.add(period)
    uow.flush()
    record(
        uow,
        actor=cmd.actor,
        action="billing.period.open",
        object_type="period",
        object_id=period.id,
        before=None,
        after={"starts_on": str(period.starts_on), "ends_on": str(ends_on)},
        at=cmd.at,
    )
    uow.commit()
    return period.id


def _open_period(uow: SqlAlchemyUnitOfWork, period_id: int) -> BillingPeriod:
    period = uow.billing.period(period_id)
    if period is None:
        raise NotFoundError(f"no billing period {period_id}")
    if period.status != "open":
        raise ConflictError(f"period {period_id} is closed")
    return period


def _price(
    uow: SqlAlchemyUnitOfWork,
    period: BillingPeriod,
    policy: BillingPolicy,
    at: Any,
    *,
    batch: credits.LedgerBatch | None = None,
    closing: bool = False,
) -> list[tuple[int, str, int]]:
    """Run the credit sweep, then bring the period's drafts up to date: the sessions are
    priced in SQL, again only if an input of the pricing changed since they were last
    priced. Returns the drafts (id, member, charges).

    `closing`: the period closes in this transaction, so a fingerprint is only worth
    taking to compare with one stored by an earlier pricing."""
    credits.sweep(uow, policy, at, batch=batch)
    # Taken before pricing: a session stored meanwhile changes the next fingerprint, so
    # drafts that miss it are priced again rather than kept.
    fingerprint = None
    if not closing or period.priced_fingerprint is not None:
        fingerprint = pricing_fingerprint(uow.session, period, currency=policy.currency)
    period.computed_at = at
    if fingerprint is not None and fingerprint == period.priced_fingerprint:
        drafts = uow.billing.drafts(period.id)
        logger.info("period %s: pricing inputs unchanged, %d drafts kept", period.id, len(drafts))
        return drafts
    uow.billing.delete_drafts(period.id)
    uow.flush()
    insert_draft_lines(uow.session, period, currency=policy.currency, at=at)
    period.priced_fingerprint = fingerprint
    return uow.billing.draft_charges(period.id)


def recompute(
    uow: SqlAlchemyUnitOfWork, period: BillingPeriod, policy: BillingPolicy, at: Any
) -> int:
    """Bring the period's drafts up to date (`_price`) and set the credits each may use
    from the balances of now."""
    drafts = _price(uow, period, policy, at)
    balances = uow.billing.balances()
    totals = []
    for statement_id, member_id, charges in drafts:
        applied = credits_to_apply(charges, balances.get(member_id, 0), policy.credit_cap_percent)
        totals.append(
            {
                "id": statement_id,
                "charges_cents": charges,
                "credits_applied_cents": applied,
                "net_cents": charges - applied,
            }
        )
    uow.billing.update_statements(totals)
    return len(drafts)


def compute_period(cmd: bc.ComputePeriod, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.TREASURER)
    period = _open_period(uow, cmd.period_id)
    count = recompute(uow, period, cmd.policy, cmd.at)
    uow.commit()
    return count


def adjust_line(cmd: bc.AdjustLine, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.TREASURER)
    statement = _statement(uow, cmd.statement_id)
    if statement.status != "draft":
        raise ConflictError(IMMUTABLE)
    line = next(
        (x for x in uow.billing.lines(statement.id) if x.session_id == cmd.session_id), None
    )
    if line is None:
        raise NotFoundError(f"statement {statement.id} has no line for session {cmd.session_id}")
    if cmd.amount_cents < 0:
        raise DomainError("an adjusted amount is never negative: use a credit note")
    if not cmd.reason.strip():
        raise DomainError("an adjustment needs a reason")
    period = _open_period(uow, statement.period_id)
    before = {"amount_cents": line.amount_cents, "computed_cents": line.computed_cents}
    uow.billing.add_adjustment(
        BillingAdjustment(
            period_id=period.id,
            session_id=line.session_id,
            amount_cents=cmd.amount_cents,
            reason=cmd.reason.strip(),
            actor_id=cmd.actor.member_id if cmd.actor else None,
            at=cmd.at,
        )
    )
    record(
        uow,
        actor=cmd.actor,
        action="billing.line.adjust",
        object_type="billing_line",
        object_id=f"{statement.member_id}/{line.session_id}",
        before=before,
        after={"amount_cents": cmd.amount_cents, "reason": cmd.reason.strip()},
        at=cmd.at,
    )
    uow.flush()
    recompute(uow, period, cmd.policy, cmd.at)
    uow.commit()


def _commit_numbered(uow: SqlAlchemyUnitOfWork) -> None:
    """Commit a transaction that gave out document numbers; two approvals at once take
    the same next number, and the second is refused by the unique number."""
    try:
        uow.commit()
    except IntegrityError as exc:
        uow.rollback()
        raise ConflictError("another approval was numbered at the same time: try again") from exc


def _statement(uow: SqlAlchemyUnitOfWork, statement_id: int) -> BillingStatement:
    statement = uow.billing.statement(statement_id)
    if statement is None:
        raise NotFoundError(f"no statement {statement_id}")
    return statement


def _approve(
    uow: SqlAlchemyUnitOfWork,
    drafts: list[tuple[int, str, int]],
    policy: BillingPolicy,
    *,
    batch: credits.LedgerBatch,
    actor_id: str | None,
    at: Any,
) -> None:
    """Approve the drafts (id, member, charges) in this order, numbered after the last
    number: apply the credits each balance allows now, spend them, freeze."""
    balances = uow.billing.balances()
    number = uow.billing.last_number()
    rows = []
    for statement_id, member_id, charges in drafts:
        number += 1
        balance = balances.get(member_id, 0)
        applied = credits_to_apply(charges, balance, policy.credit_cap_percent)
        ledger_hash = None
        if applied > 0:
            entry = credits.append_entry(
                uow,
                member_id=member_id,
                kind=EntryKind.SPEND,
                amount_cents=-applied,
                reason=f"credits applied to statement F{number:06d}",
                source_type="statement",
                source_id=str(statement_id),
                at=at,
                actor_id=actor_id,
                batch=batch,
            )
            ledger_hash = entry.hash
        balances[member_id] = balance - applied
        rows.append(
            {
                "id": statement_id,
                "charges_cents": charges,
                "credits_applied_cents": applied,
                "net_cents": charges - applied,
                "number": number,
                "ledger_hash": ledger_hash,
            }
        )
    batch.write(uow)
    uow.flush()
    uow.billing.update_statements(rows, status="approved", approved_by=actor_id, approved_at=at)
    # Approval moves a prepaid member's usage from "unsettled" to the ledger.
    prepaid.republish_for(uow, {member_id for _, member_id, _ in drafts})


def approve_statement(cmd: bc.ApproveStatement, uow: SqlAlchemyUnitOfWork) -> int | None:
    guards.require(cmd.actor, Role.TREASURER)
    statement = _statement(uow, cmd.statement_id)
    if statement.status != "draft" or statement.kind != "statement":
        raise ConflictError(IMMUTABLE)
    actor_id = cmd.actor.member_id if cmd.actor else None
    batch = credits.LedgerBatch({statement.member_id: uow.billing.chain(statement.member_id)})
    draft = [(statement.id, statement.member_id, statement.charges_cents)]
    _approve(uow, draft, cmd.policy, batch=batch, actor_id=actor_id, at=cmd.at)
    uow.session.refresh(statement)
    number = statement.number
    record(
        uow,
        actor=cmd.actor,
        action="billing.statement.approve",
        object_type="statement",
        object_id=statement.id,
        before={"status": "draft"},
        after={
            "number": number,
            "charges_cents": statement.charges_cents,
            "credits_applied_cents": statement.credits_applied_cents,
        },
        at=cmd.at,
    )
    _commit_numbered(uow)
    return number


def close_period(cmd: bc.ClosePeriod, uow: SqlAlchemyUnitOfWork) -> int:
    """Recompute, approve every draft (numbers follow member order), close."""
    guards.require(cmd.actor, Role.TREASURER)
    period = _open_period(uow, cmd.period_id)
    batch = credits.LedgerBatch(uow.billing.chains())
    priced = _price(uow, period, cmd.policy, cmd.at, batch=batch, closing=True)
    drafts = sorted(priced, key=lambda d: d[1])
    actor_id = cmd.actor.member_id if cmd.actor else None
    _approve(uow, drafts, cmd.policy, batch=batch, actor_id=actor_id, at=cmd.at)
    period.status = "closed"
    period.closed_by = actor_id
    period.closed_at = cmd.at
    record(
        uow,
        actor=cmd.actor,
        action="billing.period.close",
        object_type="period",
        object_id=period.id,
        before={"status": "open"},
        after={"status": "closed", "approved": len(drafts)},
        at=cmd.at,
    )
    _commit_numbered(uow)
    return len(drafts)


def issue_credit_note(cmd: bc.IssueCreditNote, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.TREASURER)
    original = _statement(uow, cmd.statement_id)
    if original.status != "approved" or original.kind != "statement":
        raise ConflictError("a credit note corrects an approved statement")
    left = original.charges_cents - uow.billing.credit_notes_total(original.id)
    if not 0 < cmd.amount_cents <= left:
        raise DomainError(f"a credit note is for 0.01 up to what is left to correct ({left} cents)")
    if not cmd.reason.strip():
        raise DomainError("a credit note needs a reason")
    number = uow.billing.last_number() + 1
    note = BillingStatement(
        period_id=original.period_id,
        member_id=original.member_id,
        kind="credit_note",
        status="approved",
        number=number,
        charges_cents=-cmd.amount_cents,
        credits_applied_cents=0,
        net_cents=-cmd.amount_cents,
        currency=original.currency,
        refers_to_id=original.id,
        reason=cmd.reason.strip(),
        computed_at=cmd.at,
        approved_by=cmd.actor.member_id if cmd.actor else None,
        approved_at=cmd.at,
    )
    uow.billing.add(note)
    uow.flush()
    record(
        uow,
        actor=cmd.actor,
        action="billing.credit_note.issue",
        object_type="statement",
        object_id=note.id,
        before=None,
        after={
            "number": number,
            "refers_to": original.number,
            "amount_cents": cmd.amount_cents,
            "reason": note.reason,
        },
        at=cmd.at,
    )
    _commit_numbered(uow)
    return note.id


HANDLERS: dict[type, Any] = {
    bc.AddTariff: add_tariff,
    bc.UpdateTariff: update_tariff,
    bc.AddRate: add_rate,
    bc.SetCategoryMultiplier: set_category_multiplier,
    bc.SetCategoryPrepaid: prepaid.set_category_prepaid,
    bc.AddContributionType: credits.add_contribution_type,
    bc.UpdateContributionType: credits.update_contribution_type,
    bc.SubmitClaim: credits.submit_claim,
    bc.DecideClaim: credits.decide_claim,
    bc.SweepCredits: credits.sweep_credits,
    bc.AdjustLedger: credits.adjust_ledger,
    bc.OpenPeriod: open_period,
    bc.ComputePeriod: compute_period,
    bc.AdjustLine: adjust_line,
    bc.ApproveStatement: approve_statement,
    bc.ClosePeriod: close_period,
    bc.IssueCreditNote: issue_credit_note,
}
