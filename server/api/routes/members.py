"""Members, their badges and roles, and member categories."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from server.adapters.orm import Badge, Member
from server.api.deps import (
    AdminPrincipal,
    CurrentPrincipal,
    ManagerPrincipal,
    RuntimeDep,
    TreasurerOrManager,
    UowDep,
)
from server.api.schemas import (
    BadgeCreate,
    BadgePublic,
    BadgeUpdate,
    CategoryCreate,
    CategoryPublic,
    MemberCreate,
    MemberPublic,
    MemberUpdate,
    Page,
    RolesUpdate,
    RowId,
)
from server.domain.access import Principal, Role
from server.domain.errors import NotFoundError
from server.service_layer import commands as cmds
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api", tags=["members"])

MemberId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such member (or not yours to see)"}
}


def member_public(member: Member) -> MemberPublic:
    return MemberPublic(
        id=member.id,
        name=member.name,
        email=member.email,
        category=member.category,
        active=member.active,
        created_at=member.created_at,
        roles=sorted(r.role for r in member.roles),
    )


def badge_public(badge: Badge) -> BadgePublic:
    return BadgePublic(
        id=badge.id,
        uid=badge.uid,
        member_id=badge.member_id,
        status=badge.status,
        created_at=badge.created_at,
        protection=badge.protection,
        cloned_at=badge.cloned_at,
    )


def visible_member(uow: SqlAlchemyUnitOfWork, principal: Principal, member_id: str) -> Member:
    """The member if the principal may see them (themselves, or a manager); else 404."""
    member = uow.members.get(member_id)
    allowed = principal.member_id == member_id or principal.is_manager
    if member is None or member.erased_at is not None or not allowed:
        raise NotFoundError(f"no member {member_id}")
    return member


@router.get("/members", response_model=Page[MemberPublic])
def list_members(
    uow: UowDep,
    _: ManagerPrincipal,
    search: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")] = None,
    category: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_-]+$")] = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[MemberPublic]:
    """Members by name, filtered by a search on name or email, category or activity."""
    rows, total = uow.members.page(
        search=search, category=category, active=active, limit=limit, offset=offset
    )
    items = [member_public(m) for m in rows if m.erased_at is None]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.post("/members", response_model=MemberPublic, status_code=201)
def create_member(
    body: MemberCreate, runtime: RuntimeDep, uow: UowDep, principal: ManagerPrincipal
) -> MemberPublic:
    member_id = runtime.bus.handle(
        cmds.AddMember(
            body.name,
            email=body.email,
            category=body.category,
            password=body.password,
            actor=principal,
        )
    )
    return member_public(visible_member(uow, principal, member_id))


@router.get("/members/{member_id}", response_model=MemberPublic, responses=NOT_FOUND)
def get_member(member_id: MemberId, uow: UowDep, principal: CurrentPrincipal) -> MemberPublic:
    return member_public(visible_member(uow, principal, member_id))


@router.patch("/members/{member_id}", response_model=MemberPublic, responses=NOT_FOUND)
def update_member(
    member_id: MemberId,
    body: MemberUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> MemberPublic:
    """Edit a member; `active: false` deactivates them (badges stop working at once)."""
    visible_member(uow, principal, member_id)
    runtime.bus.handle(
        cmds.UpdateMember(
            member_id,
            name=body.name,
            email=body.email,
            category=body.category,
            active=body.active,
            actor=principal,
        )
    )
    uow.session.expire_all()
    return member_public(visible_member(uow, principal, member_id))


@router.put("/members/{member_id}/roles", response_model=MemberPublic, responses=NOT_FOUND)
def set_roles(
    member_id: MemberId,
    body: RolesUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: AdminPrincipal,
) -> MemberPublic:
    """Lab-wide roles (admins only). Trainers are made by granting trainer level."""
    visible_member(uow, principal, member_id)
    roles = frozenset(Role(r) for r in body.roles)
    runtime.bus.handle(cmds.SetRoles(member_id, roles, actor=principal))
    uow.session.expire_all()
    return member_public(visible_member(uow, principal, member_id))


@router.get("/members/{member_id}/badges", response_model=list[BadgePublic], responses=NOT_FOUND)
def list_badges(member_id: MemberId, uow: UowDep, principal: CurrentPrincipal) -> list[BadgePublic]:
    visible_member(uow, principal, member_id)
    return [badge_public(b) for b in uow.badges.of_member(member_id) if b.status != "erased"]


@router.post(
    "/members/{member_id}/badges",
    response_model=BadgePublic,
    status_code=201,
    responses={**NOT_FOUND, 409: {"description": "Badge already registered"}},
)
def add_badge(
    member_id: MemberId,
    body: BadgeCreate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> BadgePublic:
    """Register a badge by its UID (or tap it on a reader: see machine enrollment)."""
    visible_member(uow, principal, member_id)
    badge_id = runtime.bus.handle(cmds.RegisterBadge(member_id, body.uid, actor=principal))
    badge = uow.badges.get(badge_id)
    assert badge is not None
    return badge_public(badge)


@router.patch(
    "/badges/{badge_id}",
    response_model=BadgePublic,
    responses={404: {"description": "No such badge"}},
)
def update_badge(
    badge_id: RowId,
    body: BadgeUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> BadgePublic:
    """Mark a badge lost or blocked (it stops working at once), or active again."""
    runtime.bus.handle(cmds.SetBadgeStatus(badge_id, body.status, actor=principal))
    uow.session.expire_all()
    badge = uow.badges.get(badge_id)
    assert badge is not None
    return badge_public(badge)


@router.get("/categories", response_model=list[CategoryPublic])
def list_categories(uow: UowDep, _: CurrentPrincipal) -> list[CategoryPublic]:
    return [CategoryPublic(id=c.id, name=c.name) for c in uow.categories.all()]


@router.post(
    "/categories",
    response_model=CategoryPublic,
    status_code=201,
    responses={409: {"description": "Category exists"}},
)
def create_category(
    body: CategoryCreate, runtime: RuntimeDep, principal: TreasurerOrManager
) -> CategoryPublic:
    runtime.bus.handle(cmds.AddCategory(body.id, body.name, actor=principal))
    return CategoryPublic(id=body.id, name=body.name)
