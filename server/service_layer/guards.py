"""Checks shared by handlers: existence and the actor's role."""

from __future__ import annotations

from server.adapters.orm import Machine, Member, TrainingType
from server.domain.access import Principal, Role
from server.domain.errors import NotFoundError, PermissionDeniedError
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def require(actor: Principal | None, role: Role) -> None:
    """Refuse unless the actor holds the role; None is the system or a shell admin."""
    if actor is not None and not actor.has(role):
        raise PermissionDeniedError(f"this needs the {role.value} role")


def member(uow: SqlAlchemyUnitOfWork, member_id: str) -> Member:
    found = uow.members.get(member_id)
    if found is None or found.erased_at is not None:
        raise NotFoundError(f"no member {member_id}")
    return found


def machine(uow: SqlAlchemyUnitOfWork, machine_id: str) -> Machine:
    found = uow.machines.get(machine_id)
    if found is None:
        raise NotFoundError(f"no machine {machine_id}")
    return found


def training_type(uow: SqlAlchemyUnitOfWork, training_type_id: str) -> TrainingType:
    found = uow.training_types.get(training_type_id)
    if found is None:
        raise NotFoundError(f"no training type {training_type_id}")
    return found


def machines_of_member(uow: SqlAlchemyUnitOfWork, member_id: str) -> set[str]:
    """Machines whose snapshot may list the member: covered by their trainings, or
    every machine for managers and admins (their badges override out-of-service)."""
    person = uow.members.get(member_id)
    if person is not None and {r.role for r in person.roles} & {"manager", "admin"}:
        return set(uow.machines.ids())
    types = {v.training_type_id for v in uow.trainings.views(member_ids={member_id})}
    machines: set[str] = set()
    for type_id in types:
        found = uow.training_types.get(type_id)
        if found is not None:
            machines |= {m.id for m in found.machines}
    return machines
