"""Handlers for training types and members' trainings."""

from __future__ import annotations

from protocol import Level, ProtocolError, check_segment
from server.adapters.orm import Training, TrainingType
from server.domain.access import Role, may_grant, may_revoke
from server.domain.errors import ConflictError, DomainError, PermissionDeniedError
from server.domain.moments import in_range
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def _lapse(months: int | None) -> int | None:
    if months is not None and not 1 <= months <= 120:
        raise DomainError("lapse_months must be between 1 and 120")
    return months


def add_training_type(cmd: cmds.AddTrainingType, uow: SqlAlchemyUnitOfWork) -> str:
    guards.require(cmd.actor, Role.MANAGER)
    try:
        check_segment(cmd.training_type_id, "training_type_id")
    except ProtocolError as exc:
        raise DomainError(str(exc)) from exc
    if uow.training_types.get(cmd.training_type_id):
        raise ConflictError(f"training type {cmd.training_type_id} already exists")
    machines = [guards.machine(uow, m) for m in cmd.machine_ids]
    training_type = TrainingType(
        id=cmd.training_type_id, name=cmd.name, lapse_months=_lapse(cmd.lapse_months)
    )
    training_type.machines = machines
    uow.training_types.add(training_type)
    record(
        uow, actor=cmd.actor, action="training_type.create", object_type="training_type",
        object_id=training_type.id, before=None,
        after={"machines": sorted(cmd.machine_ids), "lapse_months": cmd.lapse_months}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= set(cmd.machine_ids)
    return training_type.id


def update_training_type(cmd: cmds.UpdateTrainingType, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.MANAGER)
    training_type = guards.training_type(uow, cmd.training_type_id)
    before_machines = {m.id for m in training_type.machines}
    before = {"machines": sorted(before_machines), "lapse_months": training_type.lapse_months}
    if cmd.name is not None:
        training_type.name = cmd.name
    if cmd.machine_ids is not None:
        training_type.machines = [guards.machine(uow, m) for m in cmd.machine_ids]
    if cmd.clear_lapse:
        training_type.lapse_months = None
    elif cmd.lapse_months is not None:
        training_type.lapse_months = _lapse(cmd.lapse_months)
    after_machines = {m.id for m in training_type.machines}
    record(
        uow, actor=cmd.actor, action="training_type.update", object_type="training_type",
        object_id=training_type.id, before=before,
        after={"machines": sorted(after_machines), "lapse_months": training_type.lapse_months},
        at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= before_machines | after_machines


def _training_facts(training: Training) -> dict[str, object]:
    return {
        "member_id": training.member_id,
        "training_type_id": training.training_type_id,
        "level": training.level,
        "expires_at": training.expires_at,
    }


def grant_training(cmd: cmds.GrantTraining, uow: SqlAlchemyUnitOfWork) -> int:
    member = guards.member(uow, cmd.member_id)
    training_type = guards.training_type(uow, cmd.training_type_id)
    if cmd.actor is not None and not may_grant(cmd.actor, training_type.id, cmd.level):
        raise PermissionDeniedError(
            f"you may not grant {cmd.level.value} on {training_type.id}: trainers of a "
            "training grant up to autonomous, managers any level"
        )
    if cmd.expires_at is not None and in_range(cmd.expires_at, "expires_at") <= cmd.at:
        raise DomainError("expires_at must be in the future")
    current = uow.trainings.current(member.id, training_type.id)
    if (
        current is not None
        and cmd.actor is not None
        and not may_revoke(cmd.actor, training_type.id, Level(current.level))
    ):
        # A grant replaces the current training: it is a revoke, held to the revoke rule.
        raise PermissionDeniedError(
            f"{member.id} holds {current.level} on {training_type.id}: a new grant would "
            f"revoke it, and you may not revoke {current.level}"
        )
    before = _training_facts(current) if current else None
    if current is not None:
        current.revoked_at = cmd.at
        current.revoked_by = cmd.actor.member_id if cmd.actor else cmd.granted_by
    training = Training(
        member_id=member.id,
        training_type_id=training_type.id,
        level=cmd.level.value,
        granted_by=cmd.actor.member_id if cmd.actor else cmd.granted_by,
        granted_at=cmd.at,
        expires_at=cmd.expires_at,
    )
    uow.trainings.add(training)
    uow.flush()
    record(
        uow, actor=cmd.actor, action="training.grant", object_type="training",
        object_id=training.id, before=before, after=_training_facts(training), at=cmd.at,
        system_actor=cmd.granted_by,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= {m.id for m in training_type.machines}
    return training.id


def revoke_training(cmd: cmds.RevokeTraining, uow: SqlAlchemyUnitOfWork) -> None:
    training_type = guards.training_type(uow, cmd.training_type_id)
    current = uow.trainings.current(cmd.member_id, training_type.id)
    if current is None:
        raise DomainError(f"member {cmd.member_id} holds no training {training_type.id}")
    if cmd.actor is not None and not may_revoke(cmd.actor, training_type.id, Level(current.level)):
        raise PermissionDeniedError(f"you may not revoke {current.level} on {training_type.id}")
    before = _training_facts(current)
    current.revoked_at = cmd.at
    current.revoked_by = cmd.actor.member_id if cmd.actor else None
    record(
        uow, actor=cmd.actor, action="training.revoke", object_type="training",
        object_id=current.id, before=before, after=None, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= {m.id for m in training_type.machines}
