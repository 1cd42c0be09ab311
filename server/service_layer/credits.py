"""Handlers of contribution credits: contribution types, claims, the sweep, the ledger."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from server.adapters.orm_billing import BillingClaim, BillingContributionType
from server.domain.access import Role
from server.domain.billing import ledger
from server.domain.billing.credits import (
    AutomaticSource,
    ContributionRule,
    ValueKind,
    ValueUnit,
)
from server.domain.billing.metering import whole_seconds
from server.domain.billing.policy import BillingPolicy
from server.domain.errors import (
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
)
from server.service_layer import billing_commands as bc
from server.service_layer import guards, prepaid
from server.service_layer.audit import record
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_URL = re.compile(r"^https?://\S{1,490}$")
MAX_QUANTITY = 100_000


def slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise DomainError(f"{what} must be lowercase letters, digits, - or _ (at most 63)")
    return value


@dataclass
class LedgerBatch:
    """Every member's chain as loaded in this transaction, with the entries appended to
    it since (`pending`) that are not written yet: a batch (the sweep, a close) writes
    them in one bulk insert instead of one row object per entry."""

    chains: dict[str, list[ledger.LedgerEntry]]
    pending: list[ledger.LedgerEntry] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)

    def balance(self, member_id: str) -> int:
        if member_id not in self.balances:
            self.balances[member_id] = ledger.balance(self.chains.get(member_id, []))
        return self.balances[member_id]

    def add(self, entry: ledger.LedgerEntry) -> None:
        self.balances[entry.member_id] = self.balance(entry.member_id) + entry.amount_cents
        self.chains.setdefault(entry.member_id, []).append(entry)
        self.pending.append(entry)

    def write(self, uow: SqlAlchemyUnitOfWork) -> None:
        """Insert the pending entries (in chain order) and forget them."""
        uow.billing.append_all(self.pending)
        self.pending = []


def append_entry(
    uow: SqlAlchemyUnitOfWork,
    *,
    member_id: str,
    kind: ledger.EntryKind,
    amount_cents: int,
    reason: str,
    source_type: str,
    source_id: str,
    at: datetime,
    actor_id: str | None,
    minutes: int = 0,
    batch: LedgerBatch | None = None,
) -> ledger.LedgerEntry:
    """Append to the member's chain; a broken rule is a DomainError.

    Without `batch` the entry is written (flushed) at once; with it, the entry joins the
    batch's chains and pending entries, for `batch.write`."""
    if batch is None:
        chain, known = uow.billing.chain(member_id), None
    else:
        chain, known = batch.chains.get(member_id, []), batch.balance(member_id)
    try:
        entry = ledger.append(
            chain,
            member_id=member_id,
            kind=kind,
            amount_cents=amount_cents,
            reason=reason,
            source_type=source_type,
            source_id=source_id,
            at=at,
            actor_id=actor_id,
            minutes=minutes,
            chain_balance=known,
        )
    except ledger.LedgerError as exc:
        raise DomainError(str(exc)) from exc
    if batch is None:
        uow.billing.append(entry)
        uow.flush()
    else:
        batch.add(entry)
    return entry


def rule_of(contribution_type: BillingContributionType) -> ContributionRule:
    return ContributionRule(
        ValueUnit(contribution_type.unit),
        ValueKind(contribution_type.kind),
        contribution_type.value,
    )


def _type_facts(t: BillingContributionType) -> dict[str, object]:
    return {
        "name": t.name,
        "unit": t.unit,
        "kind": t.kind,
        "value": t.value,
        "automatic_source": t.automatic_source,
        "active": t.active,
    }


def add_contribution_type(cmd: bc.AddContributionType, uow: SqlAlchemyUnitOfWork) -> str:
    guards.require(cmd.actor, Role.TREASURER)
    slug(cmd.contribution_type_id, "a contribution type id")
    try:
        ContributionRule(ValueUnit(cmd.unit), ValueKind(cmd.kind), cmd.value)
        source = AutomaticSource(cmd.automatic_source) if cmd.automatic_source else None
    except ValueError as exc:
        raise DomainError(f"invalid contribution rule: {exc}") from exc
    if uow.billing.contribution_type(cmd.contribution_type_id):
        raise ConflictError(f"contribution type {cmd.contribution_type_id} already exists")
    if source and source.value in uow.billing.automatic_types():
        raise ConflictError(f"another contribution type is already credited for {source}")
    row = BillingContributionType(
        id=cmd.contribution_type_id,
        name=cmd.name,
        unit=cmd.unit,
        kind=cmd.kind,
        value=cmd.value,
        automatic_source=source.value if source else None,
        active=True,
        created_at=cmd.at,
    )
    uow.billing.add(row)
    record(
        uow,
        actor=cmd.actor,
        action="billing.contribution_type.create",
        object_type="contribution_type",
        object_id=row.id,
        before=None,
        after=_type_facts(row),
        at=cmd.at,
    )
    uow.commit()
    return row.id


def update_contribution_type(cmd: bc.UpdateContributionType, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.TREASURER)
    row = uow.billing.contribution_type(cmd.contribution_type_id)
    if row is None:
        raise NotFoundError(f"no contribution type {cmd.contribution_type_id}")
    before = _type_facts(row)
    if cmd.value is not None:
        if cmd.value < 0:
            raise DomainError("a contribution value is never negative")
        row.value = cmd.value
    if cmd.name is not None:
        row.name = cmd.name
    if cmd.active is not None:
        row.active = cmd.active
    record(
        uow,
        actor=cmd.actor,
        action="billing.contribution_type.update",
        object_type="contribution_type",
        object_id=row.id,
        before=before,
        after=_type_facts(row),
        at=cmd.at,
    )
    uow.commit()


def submit_claim(cmd: bc.SubmitClaim, uow: SqlAlchemyUnitOfWork) -> int:
    if cmd.actor is not None and cmd.actor.member_id != cmd.member_id:
        guards.require(cmd.actor, Role.MANAGER)
    guards.member(uow, cmd.member_id)
    contribution_type = uow.billing.contribution_type(cmd.contribution_type_id)
    if contribution_type is None or not contribution_type.active:
        raise NotFoundError(f"no active contribution type {cmd.contribution_type_id}")
    if contribution_type.automatic_source:
        raise DomainError(f"{contribution_type.id} is credited automatically: nothing to claim")
    if not 0 < cmd.quantity <= MAX_QUANTITY:
        raise DomainError(f"quantity must be 1 to {MAX_QUANTITY} (minutes or items)")
    if not cmd.description.strip():
        raise DomainError("describe the contribution")
    if cmd.link and not _URL.match(cmd.link):
        raise DomainError("the link must be an http(s) address")
    claim = BillingClaim(
        member_id=cmd.member_id,
        contribution_type_id=contribution_type.id,
        quantity=cmd.quantity,
        description=cmd.description.strip(),
        link=cmd.link,
        status="pending",
        created_at=cmd.at,
    )
    uow.billing.add(claim)
    uow.flush()
    record(
        uow,
        actor=cmd.actor,
        action="billing.claim.submit",
        object_type="claim",
        object_id=claim.id,
        before=None,
        after={"type": claim.contribution_type_id, "quantity": claim.quantity},
        at=cmd.at,
    )
    uow.commit()
    return claim.id


def decide_claim(cmd: bc.DecideClaim, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.MANAGER)
    claim = uow.billing.claim(cmd.claim_id)
    if claim is None:
        raise NotFoundError(f"no claim {cmd.claim_id}")
    if claim.status != "pending":
        raise ConflictError(f"claim {claim.id} was already {claim.status}")
    if cmd.actor is not None and cmd.actor.member_id == claim.member_id:
        raise PermissionDeniedError("another manager decides on your own claim")
    if not cmd.reason.strip():
        raise DomainError("give a reason for the decision")
    claim.status = "approved" if cmd.approve else "rejected"
    claim.decided_by = cmd.actor.member_id if cmd.actor else None
    claim.decided_at = cmd.at
    claim.decision_reason = cmd.reason.strip()
    if cmd.approve:
        contribution_type = uow.billing.contribution_type(claim.contribution_type_id)
        assert contribution_type is not None
        _earn(
            uow,
            contribution_type,
            cmd.policy,
            member_id=claim.member_id,
            quantity=claim.quantity,
            source=("claim", str(claim.id)),
            reason=f"{contribution_type.name}: {claim.description}"[:500],
            at=cmd.at,
            actor_id=claim.decided_by,
        )
    record(
        uow,
        actor=cmd.actor,
        action=f"billing.claim.{claim.status[:-1]}",
        object_type="claim",
        object_id=claim.id,
        before={"status": "pending"},
        after={"status": claim.status, "reason": claim.decision_reason},
        at=cmd.at,
    )
    uow.commit()


def _earn(
    uow: SqlAlchemyUnitOfWork,
    contribution_type: BillingContributionType,
    policy: BillingPolicy,
    *,
    member_id: str,
    quantity: int,
    source: tuple[str, str],
    reason: str,
    at: datetime,
    actor_id: str | None,
    batch: LedgerBatch | None = None,
) -> bool:
    rule = rule_of(contribution_type)
    cents = rule.credit_cents(quantity, policy.credit_cents_per_minute)
    if cents <= 0:
        return False
    append_entry(
        uow,
        member_id=member_id,
        kind=ledger.EntryKind.EARN,
        amount_cents=cents,
        reason=reason,
        source_type=source[0],
        source_id=source[1],
        at=at,
        actor_id=actor_id,
        minutes=rule.minutes_given(quantity),
        batch=batch,
    )
    return True


def sweep(
    uow: SqlAlchemyUnitOfWork,
    policy: BillingPolicy,
    at: datetime,
    *,
    batch: LedgerBatch | None = None,
) -> dict[str, int]:
    """Credit what the system observed, expire old credits; idempotent (keyed on the
    source object), so it may run any number of times. An automatic credit is dated when
    the contribution happened (end of the session, grant of the training). The new
    entries are written in bulk at the end.

    `batch`, when given, holds every member's chain as loaded in this transaction; the
    sweep keeps it up to date, for the caller to append more."""
    counts = {"supervision": 0, "maintenance": 0, "training": 0, "expired": 0}
    types = uow.billing.automatic_types()
    if batch is None:
        batch = LedgerBatch(uow.billing.chains())
    sources = (
        ("supervision", "supervised_session", uow.billing.supervised_sessions),
        ("maintenance", "maintenance_session", uow.billing.maintenance_sessions),
    )
    for name, source_type, query in sources:
        contribution_type = types.get(name)
        if contribution_type is None:
            continue
        done = uow.billing.credited_sources(source_type)
        for session_id, member_id, elapsed, ended_at in query(contribution_type.created_at):
            if (member_id, session_id) in done:
                continue
            minutes = whole_seconds(elapsed) // 60
            counts[name] += _earn(
                uow,
                contribution_type,
                policy,
                member_id=member_id,
                quantity=minutes if contribution_type.unit == ValueUnit.HOUR else 1,
                source=(source_type, session_id),
                reason=f"{contribution_type.name} ({session_id})",
                at=ended_at,
                actor_id=None,
                batch=batch,
            )
    training_type = types.get("training")
    if training_type is not None:
        done = uow.billing.credited_sources("training")
        for training_id, trainer, trainee, granted_at in uow.billing.trainings_given(
            training_type.created_at
        ):
            if (trainer, str(training_id)) in done:
                continue
            counts["training"] += _earn(
                uow,
                training_type,
                policy,
                member_id=trainer,
                quantity=60 if training_type.unit == ValueUnit.HOUR else 1,
                source=("training", str(training_id)),
                reason=f"{training_type.name} ({trainee})",
                at=granted_at,
                actor_id=None,
                batch=batch,
            )
    if policy.credit_expiry_months:
        counts["expired"] = _expire(uow, batch, policy.credit_expiry_months, at)
    batch.write(uow)
    uow.flush()
    return counts


def _expire(
    uow: SqlAlchemyUnitOfWork,
    batch: LedgerBatch,
    months: int,
    at: datetime,
) -> int:
    expired = 0
    for member_id, chain in list(batch.chains.items()):
        for seq, cents in ledger.due_expiries(list(chain), months, at):
            append_entry(
                uow,
                member_id=member_id,
                kind=ledger.EntryKind.EXPIRE,
                amount_cents=-cents,
                reason=f"credits of entry #{seq} unused after {months} months",
                source_type="ledger_entry",
                source_id=str(seq),
                at=at,
                actor_id=None,
                batch=batch,
            )
            expired += 1
    return expired


def sweep_credits(cmd: bc.SweepCredits, uow: SqlAlchemyUnitOfWork) -> dict[str, int]:
    guards.require(cmd.actor, Role.TREASURER)
    counts = sweep(uow, cmd.policy, cmd.at)
    if any(counts.values()):
        record(
            uow,
            actor=cmd.actor,
            action="billing.credits.sweep",
            object_type="ledger",
            object_id="all",
            before=None,
            after=counts,
            at=cmd.at,
        )
    uow.commit()
    return counts


def adjust_ledger(cmd: bc.AdjustLedger, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.TREASURER)
    guards.member(uow, cmd.member_id)
    if cmd.kind not in (ledger.EntryKind.TOPUP, ledger.EntryKind.ADJUST):
        raise DomainError("a manual ledger entry is a topup or an adjust")
    row = append_entry(
        uow,
        member_id=cmd.member_id,
        kind=ledger.EntryKind(cmd.kind),
        amount_cents=cmd.amount_cents,
        reason=cmd.reason.strip(),
        source_type="manual",
        source_id=uuid.uuid4().hex,
        at=cmd.at,
        actor_id=cmd.actor.member_id if cmd.actor else None,
    )
    record(
        uow,
        actor=cmd.actor,
        action=f"billing.ledger.{cmd.kind}",
        object_type="ledger_entry",
        object_id=f"{row.member_id}#{row.seq}",
        before=None,
        after={"amount_cents": row.amount_cents, "reason": row.reason},
        at=cmd.at,
    )
    prepaid.republish_for(uow, {cmd.member_id})  # a top-up may let the next tap start
    uow.commit()
    return row.seq
