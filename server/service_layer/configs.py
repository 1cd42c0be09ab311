"""Signing and queueing each machine's retained config (settings + permission snapshot)."""

from __future__ import annotations

from datetime import datetime

from protocol import Level, MachineSettings, Mode, StaffRole, config_topic, encode_config
from server.adapters.orm import Machine
from server.domain.access import Role
from server.domain.snapshots import BadgeGrant, PublishedVersion, StaffGrant, build_snapshot
from server.domain.trainings import effective_permissions
from server.service_layer.commands import OutgoingMessage, PublishConfigs
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def machine_settings(machine: Machine) -> MachineSettings:
    return MachineSettings(
        name=machine.name,
        mode=Mode(machine.mode),
        idle_timeout_s=machine.idle_timeout_s,
        max_duration_s=machine.max_duration_s,
        heartbeat_interval_s=machine.heartbeat_interval_s,
        out_of_service=machine.out_of_service,
        out_of_service_reason=machine.out_of_service_reason,
        warning_s=machine.warning_s,
        card_removal_grace_s=machine.card_removal_grace_s,
        supervisor_window_s=machine.supervisor_window_s,
    )


def machine_grants(uow: SqlAlchemyUnitOfWork, machine_id: str, now: datetime) -> list[BadgeGrant]:
    """Every active badge of a member holding a live training that covers the machine."""
    views = uow.trainings.views(machine_id=machine_id)
    members = {v.member_id for v in views}
    permissions = effective_permissions(views, uow.trainings.last_used(members), now)
    return [
        BadgeGrant(uid, member_id, permissions[member_id].level, permissions[member_id].expires_at)
        for member_id, uid in uow.trainings.active_badges(set(permissions))
    ]


def machine_staff(
    uow: SqlAlchemyUnitOfWork, grants: list[BadgeGrant], managers: set[str]
) -> list[StaffGrant]:
    """Trainers on the machine supervise; managers (every machine) may override
    out-of-service."""
    roles: dict[str, set[StaffRole]] = {}
    expiry: dict[str, datetime | None] = {}
    for grant in grants:
        if grant.level is Level.TRAINER:
            roles.setdefault(grant.member_id, set()).add(StaffRole.SUPERVISOR)
            expiry[grant.member_id] = grant.expires_at
    for member_id in managers:
        roles.setdefault(member_id, set()).add(StaffRole.MANAGER)
        expiry[member_id] = None  # a manager's override does not lapse with a training
    return [
        StaffGrant(uid, member_id, tuple(sorted(roles[member_id])), expiry.get(member_id))
        for member_id, uid in uow.trainings.active_badges(set(roles))
    ]


def publish_configs(cmd: PublishConfigs, uow: SqlAlchemyUnitOfWork) -> list[str]:
    """Build, sign and version the config of the machines; the messages go out after commit."""
    ids = sorted(cmd.machine_ids) if cmd.machine_ids is not None else uow.machines.ids()
    published = []
    managers = uow.members.with_roles({Role.MANAGER.value, Role.ADMIN.value})
    for machine_id in ids:
        machine = uow.machines.get(machine_id)
        controller = machine.controller if machine else None
        if machine is None or controller is None:
            continue
        grants = machine_grants(uow, machine.id, cmd.at)
        staff = machine_staff(uow, grants, managers)
        snapshot, digest = build_snapshot(
            site=machine.site,
            machine_id=machine.id,
            controller_id=controller.id,
            key=bytes.fromhex(controller.key_hex),
            settings=machine_settings(machine),
            grants=grants,
            previous=PublishedVersion(
                machine.snapshot_version, machine.snapshot_issued_at, machine.snapshot_digest
            ),
            now=cmd.at,
            staff=staff,
        )
        machine.snapshot_version = snapshot.version
        machine.snapshot_issued_at = snapshot.issued_at
        machine.snapshot_digest = digest
        payload = encode_config(snapshot, bytes.fromhex(controller.key_hex))
        uow.outgoing.append(
            OutgoingMessage(config_topic(machine.site, machine.id), payload, qos=1, retain=True)
        )
        published.append(machine.id)
    uow.commit()
    return published
