"""Checks shared by handlers: existence and the actor's role."""

from __future__ import annotations

from server.adapters.orm import Machine, Member, TrainingType
from server.domain.access import Principal, Role
from server.domain.errors import DomainError, NotFoundError, PermissionDeniedError
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


def within_reach(actor: Principal | None, target: Member) -> None:
    """Refuse to act on a member who holds a lab-wide role the actor does not hold:
    a manager cannot deactivate an admin or take over an admin's email."""
    if actor is None or actor.member_id == target.id:
        return
    above = sorted(r.role for r in target.roles if not actor.has(Role(r.role)))
    if above:
        raise PermissionDeniedError(
            f"{target.id} holds the {', '.join(above)} role, which you do not hold"
        )


def keep_an_active_admin(uow: SqlAlchemyUnitOfWork, losing: str) -> None:
    """Refuse a change that leaves the lab without an active admin when `losing` stops
    being one. It first locks the admins' role rows until the transaction ends (on
    PostgreSQL), so that two admins removing each other are serialised: the second one
    counts the admins after the first one's change is committed."""
    admins = uow.members.lock_active_admins()
    if losing in admins and not admins - {losing}:
        raise DomainError(f"{losing} is the last active admin: make another member admin first")
