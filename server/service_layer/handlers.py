"""Handlers `(cmd, uow)` for the lab's administration commands."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from protocol import ProtocolError, check_segment, normalize_uid
from server.adapters.orm import Badge, Controller, Machine, Member, Training
from server.domain.errors import ConflictError, DomainError, NotFoundError
from server.service_layer import commands as cmds
from server.service_layer.configs import publish_configs
from server.service_layer.ingest import ingest_event, record_controller_status
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def add_member(cmd: cmds.AddMember, uow: SqlAlchemyUnitOfWork) -> str:
    if cmd.email and uow.members.by_email(cmd.email):
        raise ConflictError(f"a member with email {cmd.email} already exists")
    member_id = cmd.member_id or uuid.uuid4().hex
    if uow.members.get(member_id):
        raise ConflictError(f"member {member_id} already exists")
    uow.members.add(Member(id=member_id, name=cmd.name, email=cmd.email, category=cmd.category))
    uow.commit()
    return member_id


def _member(uow: SqlAlchemyUnitOfWork, member_id: str) -> Member:
    member = uow.members.get(member_id)
    if member is None:
        raise NotFoundError(f"no member {member_id}")
    return member


def _machine(uow: SqlAlchemyUnitOfWork, machine_id: str) -> Machine:
    machine = uow.machines.get(machine_id)
    if machine is None:
        raise NotFoundError(f"no machine {machine_id}")
    return machine


def _trained_machines(uow: SqlAlchemyUnitOfWork, member_id: str) -> set[str]:
    return {m.id for m in uow.machines.all() if uow.trainings.current(member_id, m.id)}


def register_badge(cmd: cmds.RegisterBadge, uow: SqlAlchemyUnitOfWork) -> int:
    _member(uow, cmd.member_id)
    try:
        uid = normalize_uid(cmd.uid)
    except ProtocolError as exc:
        raise DomainError(str(exc)) from exc
    if uow.badges.by_uid(uid):
        raise ConflictError(f"badge {uid} is already registered")
    badge = Badge(uid=uid, member_id=cmd.member_id, status="active")
    uow.badges.add(badge)
    uow.commit()
    uow.machines_to_publish |= _trained_machines(uow, cmd.member_id)
    return badge.id


def add_machine(cmd: cmds.AddMachine, uow: SqlAlchemyUnitOfWork) -> str:
    """Create a machine and its controller; returns the controller's snapshot key (hex)."""
    try:
        check_segment(cmd.machine_id, "machine_id")
        controller_id = check_segment(cmd.controller_id or cmd.machine_id, "controller_id")
    except ProtocolError as exc:
        raise DomainError(str(exc)) from exc
    if uow.machines.get(cmd.machine_id):
        raise ConflictError(f"machine {cmd.machine_id} already exists")
    if uow.controllers.get(controller_id):
        raise ConflictError(f"controller {controller_id} already exists")
    key_hex = cmd.key_hex or secrets.token_hex(32)
    uow.machines.add(
        Machine(
            id=cmd.machine_id,
            site=cmd.site,
            name=cmd.name,
            mode=cmd.mode.value,
            idle_timeout_s=cmd.idle_timeout_s,
            max_duration_s=cmd.max_duration_s,
            heartbeat_interval_s=cmd.heartbeat_interval_s,
            out_of_service=False,
            snapshot_version=0,
            snapshot_issued_at=0,
        )
    )
    uow.flush()
    uow.controllers.add(
        Controller(id=controller_id, machine_id=cmd.machine_id, key_hex=key_hex, state="unknown")
    )
    uow.commit()
    uow.machines_to_publish.add(cmd.machine_id)
    return key_hex


def grant_training(cmd: cmds.GrantTraining, uow: SqlAlchemyUnitOfWork) -> int:
    _member(uow, cmd.member_id)
    _machine(uow, cmd.machine_id)
    current = uow.trainings.current(cmd.member_id, cmd.machine_id)
    if current is not None:
        current.revoked_at = cmd.at
    training = Training(
        member_id=cmd.member_id,
        machine_id=cmd.machine_id,
        level=cmd.level.value,
        granted_by=cmd.granted_by,
        granted_at=cmd.at,
        expires_at=cmd.expires_at,
    )
    uow.trainings.add(training)
    uow.commit()
    uow.machines_to_publish.add(cmd.machine_id)
    return training.id


def revoke_training(cmd: cmds.RevokeTraining, uow: SqlAlchemyUnitOfWork) -> None:
    current = uow.trainings.current(cmd.member_id, cmd.machine_id)
    if current is None:
        raise NotFoundError(f"member {cmd.member_id} holds no training on {cmd.machine_id}")
    current.revoked_at = cmd.at
    uow.commit()
    uow.machines_to_publish.add(cmd.machine_id)


HANDLERS: dict[type, Callable[[Any, SqlAlchemyUnitOfWork], Any]] = {
    cmds.IngestEvent: ingest_event,
    cmds.RecordControllerStatus: record_controller_status,
    cmds.AddMember: add_member,
    cmds.RegisterBadge: register_badge,
    cmds.AddMachine: add_machine,
    cmds.GrantTraining: grant_training,
    cmds.RevokeTraining: revoke_training,
    cmds.PublishConfigs: publish_configs,
}
