"""Handlers for machines, their controllers and out-of-service."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from protocol import CommandKind, ProtocolError, check_segment
from server.adapters.mosquitto import controller_username
from server.adapters.orm import Controller, Machine, TrainingType
from server.adapters.secrets import mosquitto_password_hash
from server.domain.access import Role
from server.domain.errors import ConflictError, DomainError
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.controller_commands import send_command
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

MAX_TIMEOUT_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ControllerCredentials:
    """Shown once: the controller's MQTT login and snapshot signing key."""

    controller_id: str
    mqtt_username: str
    mqtt_password: str
    key_hex: str


def machine_facts(machine: Machine) -> dict[str, Any]:
    return {
        "name": machine.name,
        "mode": machine.mode,
        "idle_timeout_s": machine.idle_timeout_s,
        "max_duration_s": machine.max_duration_s,
        "heartbeat_interval_s": machine.heartbeat_interval_s,
        "warning_s": machine.warning_s,
        "card_removal_grace_s": machine.card_removal_grace_s,
        "supervisor_window_s": machine.supervisor_window_s,
        "out_of_service": machine.out_of_service,
        "out_of_service_reason": machine.out_of_service_reason,
    }


def _check_durations(*values: int | None) -> None:
    for value in values:
        if value is not None and not 0 <= value <= MAX_TIMEOUT_S:
            raise DomainError(f"durations must be between 0 and {MAX_TIMEOUT_S} seconds")


def _check_windows(*values: int | None) -> None:
    for value in values:
        if value is not None and not 0 <= value <= 3600:
            raise DomainError("warning, grace and supervisor windows must be 0 to 3600 seconds")


def add_machine(cmd: cmds.AddMachine, uow: SqlAlchemyUnitOfWork) -> str:
    """Create a machine and its controller; returns the controller's snapshot key (hex)."""
    guards.require(cmd.actor, Role.MANAGER)
    try:
        check_segment(cmd.machine_id, "machine_id")
        controller_id = check_segment(cmd.controller_id or cmd.machine_id, "controller_id")
    except ProtocolError as exc:
        raise DomainError(str(exc)) from exc
    _check_durations(cmd.idle_timeout_s, cmd.max_duration_s)
    if not 5 <= cmd.heartbeat_interval_s <= 3600:
        raise DomainError("heartbeat_interval_s must be between 5 and 3600")
    _check_windows(cmd.warning_s, cmd.card_removal_grace_s, cmd.supervisor_window_s)
    if uow.machines.get(cmd.machine_id):
        raise ConflictError(f"machine {cmd.machine_id} already exists")
    if uow.controllers.get(controller_id):
        raise ConflictError(f"controller {controller_id} already exists")
    types = [guards.training_type(uow, t) for t in cmd.training_type_ids]
    if not types and uow.training_types.get(cmd.machine_id):
        raise ConflictError(f"training type {cmd.machine_id} already exists: name it")
    machine = Machine(
        id=cmd.machine_id,
        site=cmd.site,
        name=cmd.name,
        mode=cmd.mode.value,
        idle_timeout_s=cmd.idle_timeout_s,
        max_duration_s=cmd.max_duration_s,
        heartbeat_interval_s=cmd.heartbeat_interval_s,
        warning_s=cmd.warning_s,
        card_removal_grace_s=cmd.card_removal_grace_s,
        supervisor_window_s=cmd.supervisor_window_s,
        out_of_service=False,
        snapshot_version=0,
        snapshot_issued_at=0,
    )
    uow.machines.add(machine)
    key_hex = cmd.key_hex or secrets.token_hex(32)
    uow.flush()
    uow.controllers.add(
        Controller(id=controller_id, machine_id=cmd.machine_id, key_hex=key_hex, state="unknown")
    )
    if not types:
        types = [TrainingType(id=cmd.machine_id, name=cmd.name, lapse_months=None)]
        uow.training_types.add(types[0])
    for training_type in types:
        training_type.machines.append(machine)
    record(
        uow, actor=cmd.actor, action="machine.create", object_type="machine",
        object_id=machine.id, before=None,
        after={**machine_facts(machine), "training_types": [t.id for t in types]}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish.add(cmd.machine_id)
    return key_hex


def update_machine(cmd: cmds.UpdateMachine, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    _check_durations(cmd.idle_timeout_s, cmd.max_duration_s)
    if cmd.heartbeat_interval_s is not None and not 5 <= cmd.heartbeat_interval_s <= 3600:
        raise DomainError("heartbeat_interval_s must be between 5 and 3600")
    _check_windows(cmd.warning_s, cmd.card_removal_grace_s, cmd.supervisor_window_s)
    before = machine_facts(machine)
    settings = (
        "name",
        "idle_timeout_s",
        "max_duration_s",
        "heartbeat_interval_s",
        "warning_s",
        "card_removal_grace_s",
        "supervisor_window_s",
    )
    for name in settings:
        value = getattr(cmd, name)
        if value is not None:
            setattr(machine, name, value)
    if cmd.mode is not None:
        machine.mode = cmd.mode.value
    record(
        uow, actor=cmd.actor, action="machine.update", object_type="machine",
        object_id=machine.id, before=before, after=machine_facts(machine), at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish.add(machine.id)


def set_out_of_service(cmd: cmds.SetOutOfService, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    if cmd.out_of_service and not cmd.reason:
        raise DomainError("say why the machine is out of service")
    before = machine_facts(machine)
    machine.out_of_service = cmd.out_of_service
    machine.out_of_service_reason = cmd.reason if cmd.out_of_service else None
    action = "machine.out_of_service" if cmd.out_of_service else "machine.back_in_service"
    record(
        uow, actor=cmd.actor, action=action, object_type="machine", object_id=machine.id,
        before=before, after=machine_facts(machine), at=cmd.at,
    )  # fmt: skip
    kind = CommandKind.OUT_OF_SERVICE if cmd.out_of_service else CommandKind.BACK_IN_SERVICE
    send_command(uow, machine, kind, cmd.at, reason=cmd.reason)
    uow.commit()
    uow.machines_to_publish.add(machine.id)


def lock_machine(cmd: cmds.LockMachine, uow: SqlAlchemyUnitOfWork) -> str | None:
    """Stop the running session now; returns the command id (None: no controller)."""
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    command_id = send_command(uow, machine, CommandKind.LOCK, cmd.at, reason=cmd.reason)
    record(
        uow, actor=cmd.actor, action="machine.lock", object_type="machine", object_id=machine.id,
        before=None, after={"reason": cmd.reason, "command_id": command_id}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return command_id


def issue_controller_credentials(
    cmd: cmds.IssueControllerCredentials, uow: SqlAlchemyUnitOfWork
) -> ControllerCredentials:
    """New MQTT password and snapshot key; the old ones stop working."""
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    controller = machine.controller
    if controller is None:
        raise DomainError(f"machine {machine.id} has no controller")
    password = secrets.token_urlsafe(24)
    controller.key_hex = secrets.token_hex(32)
    controller.mqtt_username = controller_username(controller.id)
    controller.mqtt_password_hash = mosquitto_password_hash(password)
    controller.credentials_issued_at = cmd.at
    record(
        uow, actor=cmd.actor, action="controller.credentials", object_type="controller",
        object_id=controller.id, before=None, after={"mqtt_username": controller.mqtt_username},
        at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish.add(machine.id)  # re-signed with the new key
    return ControllerCredentials(
        controller.id, controller.mqtt_username, password, controller.key_hex
    )


def revoke_controller_credentials(
    cmd: cmds.RevokeControllerCredentials, uow: SqlAlchemyUnitOfWork
) -> str:
    """Forget the controller's MQTT login (the broker refuses it once its files are
    regenerated and reloaded) and replace its snapshot key with one nobody holds;
    returns the revoked username."""
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    controller = machine.controller
    if controller is None or controller.mqtt_username is None:
        raise DomainError(f"machine {machine.id} has no controller login to revoke")
    username = controller.mqtt_username
    controller.mqtt_username = None
    controller.mqtt_password_hash = None
    controller.key_hex = secrets.token_hex(32)
    controller.credentials_issued_at = None
    record(
        uow, actor=cmd.actor, action="controller.revoke", object_type="controller",
        object_id=controller.id, before={"mqtt_username": username}, after=None, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish.add(machine.id)  # re-signed with a key the old controller lacks
    return username
