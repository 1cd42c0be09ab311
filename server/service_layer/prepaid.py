"""The prepaid option on the server: category settings, derived balances, what each
snapshot tells the controller, and the reconciliation when a session's end arrives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date, datetime

from protocol import Prepaid
from server.adapters.orm import UsageSession
from server.adapters.orm_billing import BillingCategoryPricing, BillingPrepaidOverdraft
from server.domain.access import Role
from server.domain.billing.metering import local_day
from server.domain.billing.money import BASIS
from server.domain.billing.prepaid import PrepaidRule, machine_allowance, unsettled_cents
from server.domain.billing.rating import MeteredSession, Pricing
from server.domain.errors import DomainError, NotFoundError
from server.domain.snapshots import BadgeGrant
from server.service_layer import billing_commands as bc
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

MAX_CENTS = 100_000_000  # one million in the currency: a bound for typing mistakes


@dataclass(frozen=True)
class PrepaidStatus:
    """A prepaid member's derived balance against their category's rule."""

    member_id: str
    category_id: str
    rule: PrepaidRule
    balance_cents: int

    @property
    def may_start(self) -> bool:
        return self.rule.may_start(self.balance_cents)


def balances(uow: SqlAlchemyUnitOfWork, member_ids: set[str]) -> dict[str, int]:
    """member -> ledger sum minus the price of their sessions on no approved statement."""
    if not member_ids:
        return {}
    ledger = uow.billing.ledger_sums(member_ids)
    by_member: dict[str, list[MeteredSession]] = {member: [] for member in member_ids}
    for session in uow.billing.unsettled_sessions(member_ids):
        by_member[session.member_id].append(session)
    pricing = uow.billing.pricing()
    tz = uow.billing_policy.tz
    return {
        member: ledger.get(member, 0) - unsettled_cents(sessions, pricing, tz)
        for member, sessions in by_member.items()
    }


def statuses(uow: SqlAlchemyUnitOfWork, member_ids: set[str]) -> dict[str, PrepaidStatus]:
    """The prepaid members among `member_ids`, with their balance."""
    rules = uow.billing.prepaid_rules()
    if not rules:
        return {}
    categories = uow.billing.member_categories(member_ids)
    prepaid = {m: c for m, c in categories.items() if c in rules}
    derived = balances(uow, set(prepaid))
    return {m: PrepaidStatus(m, c, rules[c], derived[m]) for m, c in prepaid.items()}


@dataclass(frozen=True)
class Allowances:
    """What the prepaid grants of one or more machines are built from, read once: the
    prepaid members' statuses and, when there are any, the pricing of that day."""

    statuses: dict[str, PrepaidStatus]
    pricing: Pricing | None
    day: date

    @classmethod
    def read(cls, uow: SqlAlchemyUnitOfWork, member_ids: set[str], now: datetime) -> Allowances:
        found = statuses(uow, member_ids)
        pricing = uow.billing.pricing() if found else None
        return cls(found, pricing, local_day(now, uow.billing_policy.tz))

    def apply(self, machine_id: str, grants: list[BadgeGrant]) -> list[BadgeGrant]:
        """The grants, each prepaid member's with what the controller needs on the machine."""
        if self.pricing is None:
            return grants
        result = []
        for grant in grants:
            status = self.statuses.get(grant.member_id)
            if status is not None:
                rate, multiplier = self.pricing.rate_for(machine_id, status.category_id, self.day)
                allowance = machine_allowance(status.rule, status.balance_cents, rate, multiplier)
                grant = replace(grant, prepaid=Prepaid(allowance.may_start, allowance.allowance_s))
            result.append(grant)
        return result


def with_allowances(
    uow: SqlAlchemyUnitOfWork, machine_id: str, grants: list[BadgeGrant], now: datetime
) -> list[BadgeGrant]:
    """The grants, each prepaid member's with what the controller needs on this machine."""
    return Allowances.read(uow, {g.member_id for g in grants}, now).apply(machine_id, grants)


def republish_for(uow: SqlAlchemyUnitOfWork, member_ids: set[str]) -> None:
    """Queue the snapshots of the machines of these members, the prepaid ones: their
    balance changed (a top-up, a session's end, an approved statement)."""
    rules = uow.billing.prepaid_rules()
    if not rules:
        return
    for member_id, category in uow.billing.member_categories(member_ids).items():
        if category in rules:
            uow.machines_to_publish |= uow.billing.member_machines(member_id)


def prefetch(uow: SqlAlchemyUnitOfWork) -> None:
    """Read the prepaid rules for this transaction, as `session_ended` will."""
    uow.memo_read(("prepaid rules",), uow.billing.prepaid_rules)


def session_ended(uow: SqlAlchemyUnitOfWork, usage: UsageSession, at: datetime) -> None:
    """Reconcile a prepaid member's session when its end arrives: their snapshots are
    republished with the new balance, and a session that left the balance past the
    overdraft bound (billed in full, as every session) is flagged."""
    if usage.member_id is None:
        return
    # Ingest changes neither the prepaid rules nor a member's category: a batch of
    # events reads them once, and a lab without prepaid categories stops here.
    rules = uow.memo_read(("prepaid rules",), uow.billing.prepaid_rules)  # as `prefetch`
    if not rules:
        return
    member_id = usage.member_id
    category = uow.memo_read(
        ("member category", member_id),
        lambda: uow.billing.member_categories({member_id}).get(member_id),
    )
    if category not in rules:
        return
    status = statuses(uow, {usage.member_id}).get(usage.member_id)
    if status is None:
        return
    uow.machines_to_publish |= uow.billing.member_machines(usage.member_id)
    if not status.rule.overdrawn(status.balance_cents):
        return
    if uow.billing.prepaid_overdraft(usage.id) is None:
        uow.billing.add(
            BillingPrepaidOverdraft(
                session_id=usage.id,
                member_id=usage.member_id,
                machine_id=usage.machine_id,
                balance_cents=status.balance_cents,
                overdraft_cents=status.rule.overdraft_cents,
                flagged_at=at,
            )
        )
    logger.warning(
        "session %s left prepaid member %s at %d cents, past the overdraft bound of %d",
        usage.id, usage.member_id, status.balance_cents, status.rule.overdraft_cents,
    )  # fmt: skip


def set_category_prepaid(cmd: bc.SetCategoryPrepaid, uow: SqlAlchemyUnitOfWork) -> None:
    """Turn the prepaid option of a member category on or off, with its amounts."""
    guards.require(cmd.actor, Role.TREASURER)
    if uow.categories.get(cmd.category_id) is None:
        raise NotFoundError(f"no member category {cmd.category_id}")
    for cents, what in ((cmd.threshold_cents, "threshold"), (cmd.overdraft_cents, "overdraft")):
        if not 0 <= cents <= MAX_CENTS:
            raise DomainError(f"the prepaid {what} is from 0 to {MAX_CENTS // 100}")
    row = uow.billing.category_pricing(cmd.category_id)
    before = _facts(row) if row else None
    if row is None:
        row = BillingCategoryPricing(category_id=cmd.category_id, multiplier_bp=BASIS)
        uow.billing.add(row)
    row.prepaid = cmd.prepaid
    row.prepaid_threshold_cents = cmd.threshold_cents
    row.prepaid_overdraft_cents = cmd.overdraft_cents
    record(
        uow,
        actor=cmd.actor,
        action="billing.category.prepaid",
        object_type="category",
        object_id=cmd.category_id,
        before=before,
        after=_facts(row),
        at=cmd.at,
    )
    uow.commit()
    # Every snapshot may list a member of the category: rebuild them all.
    uow.machines_to_publish |= set(uow.machines.ids())


def _facts(row: BillingCategoryPricing) -> dict[str, object]:
    return {
        "prepaid": bool(row.prepaid),
        "threshold_cents": row.prepaid_threshold_cents,
        "overdraft_cents": row.prepaid_overdraft_cents,
    }
