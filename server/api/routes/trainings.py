"""Training types, members' trainings (grant, revoke) and the lapse report."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from server.adapters.orm import Training, TrainingType, utcnow
from server.api.deps import (
    CurrentPrincipal,
    ManagerPrincipal,
    RuntimeDep,
    TrainerPrincipal,
    UowDep,
)
from server.api.schemas import (
    Page,
    TrainingGrant,
    TrainingPublic,
    TrainingRevoke,
    TrainingTypeCreate,
    TrainingTypePublic,
    TrainingTypeUpdate,
)
from server.domain.access import Principal
from server.domain.trainings import lapses_at
from server.service_layer import commands as cmds
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api", tags=["trainings"])

TypeId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such training type"}}


def type_public(training_type: TrainingType) -> TrainingTypePublic:
    return TrainingTypePublic(
        id=training_type.id,
        name=training_type.name,
        lapse_months=training_type.lapse_months,
        machine_ids=[m.id for m in training_type.machines],
    )


def _type(uow: SqlAlchemyUnitOfWork, training_type_id: str) -> TrainingType:
    found = uow.training_types.get(training_type_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no training type {training_type_id}")
    return found


@router.get("/training-types", response_model=list[TrainingTypePublic])
def list_training_types(uow: UowDep, _: CurrentPrincipal) -> list[TrainingTypePublic]:
    return [type_public(t) for t in uow.training_types.all()]


@router.post(
    "/training-types",
    response_model=TrainingTypePublic,
    status_code=201,
    responses={409: {"description": "Training type exists"}},
)
def create_training_type(
    body: TrainingTypeCreate, runtime: RuntimeDep, uow: UowDep, principal: ManagerPrincipal
) -> TrainingTypePublic:
    """A training covering one or more machines; `lapse_months` makes it lapse after disuse."""
    runtime.bus.handle(
        cmds.AddTrainingType(
            body.id, body.name, tuple(body.machine_ids), body.lapse_months, actor=principal
        )
    )
    return type_public(_type(uow, body.id))


@router.patch(
    "/training-types/{training_type_id}", response_model=TrainingTypePublic, responses=NOT_FOUND
)
def update_training_type(
    training_type_id: TypeId,
    body: TrainingTypeUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> TrainingTypePublic:
    runtime.bus.handle(
        cmds.UpdateTrainingType(
            training_type_id,
            name=body.name,
            machine_ids=tuple(body.machine_ids) if body.machine_ids is not None else None,
            lapse_months=body.lapse_months,
            clear_lapse=body.never_lapses,
            actor=principal,
        )
    )
    uow.session.expire_all()
    return type_public(_type(uow, training_type_id))


def _trainings_public(uow: SqlAlchemyUnitOfWork, rows: list[Training]) -> list[TrainingPublic]:
    members = {t.member_id for t in rows}
    names = uow.members.names(members)
    last_used = uow.trainings.last_used(members)
    result = []
    for t in rows:
        training_type = uow.training_types.get(t.training_type_id)
        used = last_used.get((t.member_id, t.training_type_id))
        lapse = lapses_at(
            granted_at=t.granted_at,
            last_used_at=used,
            lapse_months=training_type.lapse_months if training_type else None,
        )
        result.append(
            TrainingPublic(
                id=t.id,
                member_id=t.member_id,
                member_name=names.get(t.member_id),
                training_type_id=t.training_type_id,
                level=t.level,
                granted_by=t.granted_by,
                granted_at=t.granted_at,
                expires_at=t.expires_at,
                revoked_at=t.revoked_at,
                last_used_at=used,
                lapses_at=lapse if t.revoked_at is None else None,
            )
        )
    return result


def _may_list(principal: Principal, member: str | None, training_type: str | None) -> bool:
    """Managers see all; trainers the trainings of their types; everyone their own."""
    if principal.is_manager or member == principal.member_id:
        return True
    return training_type is not None and training_type in principal.trainer_of


@router.get("/trainings", response_model=Page[TrainingPublic])
def list_trainings(
    uow: UowDep,
    principal: CurrentPrincipal,
    member: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    training_type: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] = None,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[TrainingPublic]:
    """Trainings with when each lapses; makers see their own (`member` defaults to them)."""
    if member is None and not principal.is_manager and training_type is None:
        member = principal.member_id
    if not _may_list(principal, member, training_type):
        raise HTTPException(status_code=403, detail="you may only list your own trainings")
    rows, total = uow.trainings.page(
        member_id=member,
        training_type_id=training_type,
        include_revoked=include_revoked,
        limit=limit,
        offset=offset,
    )
    return Page(items=_trainings_public(uow, list(rows)), total=total, limit=limit, offset=offset)


@router.post(
    "/trainings",
    response_model=TrainingPublic,
    status_code=201,
    responses={
        403: {"description": "Not trainer of this training"},
        404: {"description": "No such member or type"},
    },
)
def grant_training(
    body: TrainingGrant, runtime: RuntimeDep, uow: UowDep, principal: TrainerPrincipal
) -> TrainingPublic:
    """Grant (or change) a member's training; the machines' controllers know within a second.

    Trainers grant up to autonomous on the trainings they are trainer of; managers any level.
    """
    training_id = runtime.bus.handle(
        cmds.GrantTraining(
            body.member_id,
            body.training_type_id,
            body.level,
            expires_at=body.expires_at,
            actor=principal,
        )
    )
    training = uow.trainings.get(training_id)
    assert training is not None
    return _trainings_public(uow, [training])[0]


@router.post(
    "/trainings/revoke",
    status_code=204,
    responses={
        403: {"description": "Not trainer of this training"},
        404: {"description": "No such type"},
    },
)
def revoke_training(body: TrainingRevoke, runtime: RuntimeDep, principal: TrainerPrincipal) -> None:
    """Revoke a member's training: their next tap on its machines is refused."""
    runtime.bus.handle(cmds.RevokeTraining(body.member_id, body.training_type_id, actor=principal))


@router.get("/trainings/lapsing", response_model=list[TrainingPublic])
def lapsing_trainings(
    uow: UowDep,
    principal: TrainerPrincipal,
    within_days: Annotated[int, Query(ge=0, le=3650)] = 30,
) -> list[TrainingPublic]:
    """Live trainings that lapse for disuse within `within_days` (soonest first).

    Managers see every training; trainers those of the trainings they are trainer of.
    """
    types = None if principal.is_manager else set(principal.trainer_of)
    now = utcnow()
    horizon = now + timedelta(days=within_days)
    lapsing = [
        t
        for t in _trainings_public(uow, list(uow.trainings.lapsable(types)))
        if t.lapses_at is not None and now < t.lapses_at <= horizon
    ]
    return sorted(lapsing, key=lambda t: t.lapses_at or now)
