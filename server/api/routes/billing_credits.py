"""Contribution credits: contribution types, claims, the ledger and balances.

Treasurer: types, top-ups and adjustments, every ledger; manager: decides on claims;
maker: own claims, own ledger, own balance.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from server.adapters.orm_billing import BillingClaim, BillingContributionType
from server.api.billing_schemas import (
    BalancePublic,
    ClaimCreate,
    ClaimDecision,
    ClaimPublic,
    ContributionTypeCreate,
    ContributionTypePublic,
    ContributionTypeUpdate,
    LedgerEntryCreate,
    LedgerEntryPublic,
    LedgerPublic,
    LedgerVerification,
    SweepPublic,
)
from server.api.deps import CurrentPrincipal, ManagerPrincipal, RuntimeDep, UowDep, require
from server.api.schemas import _PRINTABLE
from server.domain.access import Principal, Role
from server.domain.billing import ledger
from server.domain.billing.money import from_cents, to_cents
from server.service_layer import billing_commands as bc
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api/billing", tags=["credits"])

TreasurerPrincipal = Annotated[Principal, Depends(require(Role.TREASURER))]
TypeId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object"}}
RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]


def type_public(t: BillingContributionType) -> ContributionTypePublic:
    return ContributionTypePublic(
        id=t.id,
        name=t.name,
        unit=t.unit,
        kind=t.kind,
        value=t.value,
        automatic_source=t.automatic_source,
        active=t.active,
    )


@router.get("/contribution-types", response_model=list[ContributionTypePublic])
def list_contribution_types(uow: UowDep, _: CurrentPrincipal) -> list[ContributionTypePublic]:
    return [type_public(t) for t in uow.billing.contribution_types()]


@router.post("/contribution-types", response_model=ContributionTypePublic, status_code=201)
def create_contribution_type(
    body: ContributionTypeCreate, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> ContributionTypePublic:
    """`value` per hour (prorated by the minute) or per item, in cents or machine
    minutes; `automatic_source` makes the system credit it without a claim."""
    runtime.bus.handle(
        bc.AddContributionType(
            body.id,
            body.name,
            body.unit,
            body.kind,
            body.value,
            body.automatic_source,
            actor=principal,
        )
    )
    found = uow.billing.contribution_type(body.id)
    assert found is not None
    return type_public(found)


@router.patch(
    "/contribution-types/{type_id}", response_model=ContributionTypePublic, responses=NOT_FOUND
)
def update_contribution_type(
    type_id: TypeId,
    body: ContributionTypeUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> ContributionTypePublic:
    runtime.bus.handle(
        bc.UpdateContributionType(type_id, body.name, body.value, body.active, actor=principal)
    )
    uow.session.expire_all()
    found = uow.billing.contribution_type(type_id)
    assert found is not None
    return type_public(found)


def claim_public(c: BillingClaim) -> ClaimPublic:
    return ClaimPublic(
        id=c.id,
        member_id=c.member_id,
        contribution_type_id=c.contribution_type_id,
        quantity=c.quantity,
        description=c.description,
        link=c.link,
        status=c.status,
        created_at=c.created_at,
        decided_by=c.decided_by,
        decided_at=c.decided_at,
        decision_reason=c.decision_reason,
    )


@router.get("/claims", response_model=list[ClaimPublic])
def list_claims(
    uow: UowDep,
    principal: CurrentPrincipal,
    status: Literal["pending", "approved", "rejected"] | None = None,
) -> list[ClaimPublic]:
    """Managers and treasurers see every claim; anyone else their own."""
    sees_all = principal.has(Role.MANAGER) or principal.has(Role.TREASURER)
    member_id = None if sees_all else principal.member_id
    return [claim_public(c) for c in uow.billing.claims(member_id=member_id, status=status)]


@router.post("/claims", response_model=ClaimPublic, status_code=201)
def submit_claim(
    body: ClaimCreate, runtime: RuntimeDep, uow: UowDep, principal: CurrentPrincipal
) -> ClaimPublic:
    """Claim a contribution (documentation with its link, open-hours hosting…)."""
    claim_id = runtime.bus.handle(
        bc.SubmitClaim(
            body.member_id or principal.member_id,
            body.contribution_type_id,
            body.quantity,
            body.description,
            body.link,
            actor=principal,
        )
    )
    found = uow.billing.claim(claim_id)
    assert found is not None
    return claim_public(found)


@router.post("/claims/{claim_id}/decision", response_model=ClaimPublic, responses=NOT_FOUND)
def decide_claim(
    claim_id: RowId,
    body: ClaimDecision,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> ClaimPublic:
    """Approve (credits the member's ledger) or reject, with a reason."""
    runtime.bus.handle(
        bc.DecideClaim(
            claim_id, body.approve, body.reason, runtime.settings.billing_policy(), actor=principal
        )
    )
    uow.session.expire_all()
    found = uow.billing.claim(claim_id)
    assert found is not None
    return claim_public(found)


def entry_public(e: ledger.LedgerEntry) -> LedgerEntryPublic:
    return LedgerEntryPublic(
        member_id=e.member_id,
        seq=e.seq,
        kind=e.kind.value,
        amount=from_cents(e.amount_cents),
        minutes=e.minutes,
        actor_id=e.actor_id,
        reason=e.reason,
        source_type=e.source_type,
        source_id=e.source_id,
        at=e.at,
        hash=e.hash,
    )


def _ledger(uow: SqlAlchemyUnitOfWork, member_id: str, currency: str) -> LedgerPublic:
    chain = uow.billing.chain(member_id)
    return LedgerPublic(
        member_id=member_id,
        balance=from_cents(ledger.balance(chain)),
        currency=currency,
        entries=[entry_public(e) for e in chain],
    )


@router.get("/ledger", response_model=LedgerPublic)
def get_ledger(
    uow: UowDep,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    member_id: Annotated[str | None, Query(min_length=1, max_length=36, pattern=_PRINTABLE)] = None,
) -> LedgerPublic:
    """Your credits ledger; treasurers may ask for any member's."""
    if member_id and member_id != principal.member_id and not principal.has(Role.TREASURER):
        raise HTTPException(404, f"no ledger of {member_id} for you")
    return _ledger(uow, member_id or principal.member_id, runtime.settings.currency)


@router.post("/ledger/entries", response_model=LedgerPublic, status_code=201)
def add_ledger_entry(
    body: LedgerEntryCreate, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> LedgerPublic:
    """A top-up (money paid in advance) or an adjustment, with a reason; never an edit."""
    cents = to_cents(body.amount)
    runtime.bus.handle(
        bc.AdjustLedger(body.member_id, body.kind, cents, body.reason, actor=principal)
    )
    return _ledger(uow, body.member_id, runtime.settings.currency)


@router.get("/ledger/verify", response_model=LedgerVerification)
def verify_ledgers(uow: UowDep, _: TreasurerPrincipal) -> LedgerVerification:
    """Check every member's hash chain; `problems` lists each break found."""
    chains = uow.billing.chains()
    problems = [p for chain in chains.values() for p in ledger.verify(chain)]
    return LedgerVerification(
        members=len(chains), entries=sum(len(c) for c in chains.values()), problems=problems
    )


@router.post("/credits/sweep", response_model=SweepPublic)
def sweep_credits(runtime: RuntimeDep, principal: TreasurerPrincipal) -> SweepPublic:
    """Credit supervised sessions, trainings given and maintenance; expire old credits.
    Each source is credited once, however often this runs."""
    counts = runtime.bus.handle(bc.SweepCredits(runtime.settings.billing_policy(), actor=principal))
    return SweepPublic(**counts)


def balance_public(
    uow: SqlAlchemyUnitOfWork, member_id: str | None, currency: str
) -> BalancePublic:
    b = uow.billing.balance(member_id)
    return BalancePublic(
        member_id=member_id,
        credits=from_cents(b.credits_cents),
        earned=from_cents(b.earned_cents),
        spent=from_cents(b.spent_cents),
        hours_given=(Decimal(b.minutes_given) / 60).quantize(Decimal("0.01")),
        machine_hours_used=(Decimal(b.machine_minutes_used) / 60).quantize(Decimal("0.01")),
        currency=currency,
    )


@router.get("/balance", response_model=BalancePublic)
def my_balance(uow: UowDep, runtime: RuntimeDep, principal: CurrentPrincipal) -> BalancePublic:
    """Your contribution / retribution balance."""
    return balance_public(uow, principal.member_id, runtime.settings.currency)


@router.get("/balances", response_model=list[BalancePublic])
def all_balances(uow: UowDep, runtime: RuntimeDep, _: TreasurerPrincipal) -> list[BalancePublic]:
    """The lab as a whole (member_id null) first, then each member with a ledger."""
    currency = runtime.settings.currency
    members = sorted(uow.billing.balances())
    return [balance_public(uow, None, currency)] + [
        balance_public(uow, m, currency) for m in members
    ]
