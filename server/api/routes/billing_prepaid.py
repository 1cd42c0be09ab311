"""The prepaid option: a category's settings (treasurer), a member's prepaid balance
(the member, or a treasurer), and the sessions flagged past the overdraft bound."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from server.api.billing_schemas import (
    CategoryPrepaidPublic,
    CategoryPrepaidUpdate,
    PrepaidOverdraftPublic,
    PrepaidStatusPublic,
)
from server.api.deps import CurrentPrincipal, RuntimeDep, UowDep, require
from server.api.routes.billing import MemberFilter
from server.domain.access import Principal, Role
from server.domain.billing.money import from_cents, to_cents
from server.service_layer import billing_commands as bc
from server.service_layer import prepaid
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api/billing", tags=["prepaid"])

TreasurerPrincipal = Annotated[Principal, Depends(require(Role.TREASURER))]
CategoryId = Annotated[str, Path(max_length=40)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object"}}


def category_prepaid(
    uow: SqlAlchemyUnitOfWork, category_id: str, currency: str
) -> CategoryPrepaidPublic:
    row = uow.billing.category_pricing(category_id)
    return CategoryPrepaidPublic(
        category_id=category_id,
        prepaid=bool(row and row.prepaid),
        threshold=from_cents(row.prepaid_threshold_cents if row else 0),
        overdraft=from_cents(row.prepaid_overdraft_cents if row else 0),
        currency=currency,
    )


@router.put(
    "/categories/{category_id}/prepaid", response_model=CategoryPrepaidPublic, responses=NOT_FOUND
)
def set_category_prepaid(
    category_id: CategoryId,
    body: CategoryPrepaidUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> CategoryPrepaidPublic:
    """Prepaid on or off for a member category: its members start at or above
    `threshold`; their sessions stop when the balance would pass `-overdraft`."""
    runtime.bus.handle(
        bc.SetCategoryPrepaid(
            category_id,
            body.prepaid,
            to_cents(body.threshold),
            to_cents(body.overdraft),
            actor=principal,
        )
    )
    uow.session.expire_all()
    return category_prepaid(uow, category_id, runtime.settings.currency)


def prepaid_status(
    uow: SqlAlchemyUnitOfWork, member_id: str, currency: str
) -> PrepaidStatusPublic:
    category = uow.billing.member_categories({member_id}).get(member_id)
    status = prepaid.statuses(uow, {member_id}).get(member_id)
    if status is None:
        return PrepaidStatusPublic(
            member_id=member_id, category_id=category, prepaid=False, balance=None,
            threshold=None, overdraft=None, may_start=None, currency=currency,
        )  # fmt: skip
    return PrepaidStatusPublic(
        member_id=member_id,
        category_id=status.category_id,
        prepaid=True,
        balance=from_cents(status.balance_cents),
        threshold=from_cents(status.rule.threshold_cents),
        overdraft=from_cents(status.rule.overdraft_cents),
        may_start=status.may_start,
        currency=currency,
    )


@router.get("/prepaid", response_model=PrepaidStatusPublic, responses=NOT_FOUND)
def get_prepaid_status(
    uow: UowDep, runtime: RuntimeDep, principal: CurrentPrincipal, member_id: MemberFilter = None
) -> PrepaidStatusPublic:
    """Your prepaid balance (treasurers may ask for any member's): the ledger minus the
    price of your sessions not yet on an approved statement."""
    if member_id and member_id != principal.member_id and not principal.has(Role.TREASURER):
        raise HTTPException(404, f"no prepaid balance of {member_id} for you")
    wanted = member_id or principal.member_id
    if uow.members.get(wanted) is None:
        raise HTTPException(404, f"no member {wanted}")
    return prepaid_status(uow, wanted, runtime.settings.currency)


@router.get("/prepaid/overdrafts", response_model=list[PrepaidOverdraftPublic])
def list_prepaid_overdrafts(
    uow: UowDep, runtime: RuntimeDep, _: TreasurerPrincipal
) -> list[PrepaidOverdraftPublic]:
    """Prepaid sessions that left the balance past the overdraft bound (decided
    offline, or on several machines at once): billed in full, listed here."""
    currency = runtime.settings.currency
    return [
        PrepaidOverdraftPublic(
            session_id=o.session_id,
            member_id=o.member_id,
            machine_id=o.machine_id,
            balance=from_cents(o.balance_cents),
            overdraft=from_cents(o.overdraft_cents),
            flagged_at=o.flagged_at,
            currency=currency,
        )
        for o in uow.billing.prepaid_overdrafts()
    ]
