"""Trainer pages: the members I may train, grant and revoke, sessions I supervised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from protocol import Level
from server.adapters.web_queries import supervised_by
from server.api.deps import RuntimeDep, UowDep
from server.domain.access import Role, may_grant
from server.service_layer import commands as cmds
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from server.web.labels import ALL as LABELS
from server.web.maker import machine_names, my_trainings, type_names
from server.web.session import FormUser, TrainerUser, WebUser, need, safe_next
from server.web.templating import render

router = APIRouter(include_in_schema=False)

Search = Annotated[str, Query(max_length=100)]


def grantable_types(uow: SqlAlchemyUnitOfWork, user: WebUser) -> list[Any]:
    """Training types the member may grant (all for managers)."""
    types = uow.training_types.all()
    if user.is_manager:
        return list(types)
    return [t for t in types if t.id in user.principal.trainer_of]


def grantable_levels(user: WebUser, types: list[Any]) -> list[str]:
    """Levels the member may grant for at least one of the types."""
    return [
        level.value
        for level in Level
        if any(may_grant(user.principal, t.id, level) for t in types)
    ]


@router.get("/trainer", response_class=HTMLResponse)
def members_to_train(
    request: Request, uow: UowDep, user: TrainerUser, q: Search = ""
) -> HTMLResponse:
    """Search the active members by name, with their trainings of my types."""
    rows, total = uow.members.page(search=q or None, active=True, limit=50) if q else ([], 0)
    mine = {t.id for t in grantable_types(uow, user)}
    trainings: dict[str, list[Any]] = {}
    for member in rows:
        trainings[member.id] = [
            t for t in my_trainings(uow, member.id) if t.training_type_id in mine
        ]
    context = {"q": q, "members": [m for m in rows if m.erased_at is None], "total": total,
               "trainings": trainings, "type_names": type_names(uow), **LABELS}  # fmt: skip
    return render(request, "trainer.html", context)


@router.get("/trainer/supervised", response_class=HTMLResponse)
def supervised(request: Request, uow: UowDep, user: TrainerUser) -> HTMLResponse:
    """Supervised sessions that my badge confirmed."""
    sessions = supervised_by(uow.session, user.member_id)
    names = uow.members.names({s.member_id for s in sessions if s.member_id})
    context = {"sessions": sessions, "names": names, "machine_names": machine_names(uow)}
    return render(request, "supervised.html", context)


@router.post("/members/{member_id}/trainings")
def grant(
    member_id: str,
    request: Request,
    runtime: RuntimeDep,
    user: FormUser,
    training_type: Annotated[str, Form(max_length=63)] = "",
    level: Annotated[str, Form(max_length=20)] = "autonomous",
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Grant a training (managers any level; trainers of the type up to autonomous)."""
    need(user, Role.TRAINER)
    try:
        parsed = Level(level)
    except ValueError as exc:
        raise HTTPException(400, "unknown level") from exc
    runtime.bus.handle(cmds.GrantTraining(member_id, training_type, parsed, actor=user.principal))
    target = safe_next(back or f"/members/{member_id}")
    return RedirectResponse(_with_done(target, "granted"), status_code=303)


@router.post("/members/{member_id}/trainings/{training_type}/revoke")
def revoke(
    member_id: str,
    training_type: str,
    runtime: RuntimeDep,
    user: FormUser,
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    need(user, Role.TRAINER)
    runtime.bus.handle(cmds.RevokeTraining(member_id, training_type, actor=user.principal))
    target = safe_next(back or f"/members/{member_id}")
    return RedirectResponse(_with_done(target, "revoked"), status_code=303)


def _with_done(path: str, done: str) -> str:
    base = path.split("?")[0]
    return f"{base}?done={done}"


def trainer_member_context(
    uow: SqlAlchemyUnitOfWork, user: WebUser, member_id: str
) -> dict[str, Any]:
    """What a trainer sees of a member: name, trainings, what they may grant."""
    member = uow.members.get(member_id)
    if member is None or member.erased_at is not None:
        raise HTTPException(404, "no such member")
    types = grantable_types(uow, user)
    return {
        "member": member,
        "trainings": my_trainings(uow, member.id),
        "type_names": type_names(uow),
        "grant_types": types,
        "grant_levels": grantable_levels(user, types),
        "revoke_for": {t.id for t in types},
        "now": datetime.now(UTC),
        **LABELS,
    }


