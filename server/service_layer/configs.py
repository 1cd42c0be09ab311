"""Signing and queueing each machine's retained config (settings + permission snapshot)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from protocol import (
    Level,
    MachineSettings,
    Mode,
    PermissionSnapshot,
    StaffRole,
    config_topic,
    encode_config,
)
from server.adapters.orm import Controller, Machine, utcnow
from server.adapters.repository import SnapshotRecord
from server.domain.access import Role
from server.domain.snapshots import BadgeGrant, PublishedVersion, StaffGrant, build_snapshot
from server.domain.trainings import TrainingView, effective_permissions
from server.service_layer import prepaid
from server.service_layer.commands import ConfigMessage, OutgoingMessage, PublishConfigs
from server.service_layer.periodic import ExclusiveRun, PeriodicWorker
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

if TYPE_CHECKING:
    from server.service_layer.messagebus import MessageBus


def machine_settings(machine: Machine, *, plain_badges_allowed: bool = True) -> MachineSettings:
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
        plain_badges_allowed=plain_badges_allowed,
    )


def machine_grants(uow: SqlAlchemyUnitOfWork, machine_id: str, now: datetime) -> list[BadgeGrant]:
    """Every active badge of a member holding a live training that covers the machine."""
    return _AccessReading.of(uow, [machine_id], set()).grants(machine_id, now)


class _AccessReading:
    """What the snapshots of some machines are built from, read once for all of them:
    the trainings covering each, last uses, active badges (of the trained members and of
    `staff`), and which badges carry the anti-cloning sector."""

    def __init__(
        self,
        views: dict[str, list[TrainingView]],
        last_used: dict[tuple[str, str], datetime],
        badges: dict[str, list[str]],
        protected: set[str],
    ) -> None:
        self.views, self.last_used, self.badges, self.protected = (
            views, last_used, badges, protected
        )

    @classmethod
    def of(
        cls, uow: SqlAlchemyUnitOfWork, ids: list[str], staff: set[str]
    ) -> _AccessReading:
        views = uow.trainings.views_by_machine(ids)
        members = {v.member_id for machine_views in views.values() for v in machine_views}
        badges: dict[str, list[str]] = {}
        for member_id, uid in uow.trainings.active_badges(members | staff):
            badges.setdefault(member_id, []).append(uid)
        protected = uow.badges.protected_uids({uid for uids in badges.values() for uid in uids})
        last_used = uow.trainings.last_used(members) if members else {}
        return cls(views, last_used, badges, protected)

    def grants(self, machine_id: str, now: datetime) -> list[BadgeGrant]:
        permissions = effective_permissions(self.views.get(machine_id, []), self.last_used, now)
        return [
            BadgeGrant(uid, member_id, permission.level, permission.expires_at,
                       protected=uid in self.protected)
            for member_id, permission in permissions.items()
            for uid in self.badges.get(member_id, ())
        ]  # fmt: skip

    def badges_of(self, member_ids: set[str]) -> list[tuple[str, str]]:
        return [(m, uid) for m in sorted(member_ids) for uid in self.badges.get(m, ())]


# (member id, badge uid) of the active badges of the given members.
BadgeLookup = Callable[[set[str]], list[tuple[str, str]]]


def _staff(grants: list[BadgeGrant], managers: set[str], badges: BadgeLookup) -> list[StaffGrant]:
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
        for member_id, uid in badges(set(roles))
    ]


# Each failed compare-and-set means another publisher recorded a newer version meanwhile.
_VERSION_ATTEMPTS = 20


class ConcurrentPublishError(RuntimeError):
    """Another publisher kept recording a newer version of the machine's snapshot."""


def publish_configs(cmd: PublishConfigs, uow: SqlAlchemyUnitOfWork) -> list[str]:
    """Build, sign and version the config of the machines; the messages go out after commit.

    Each machine's version is recorded by compare-and-set: two publishers that read the
    same previous version cannot both record a new one, the second builds again from the
    state the first committed. Several machines are built from one read of the
    trainings and recorded in one transaction, their compare-and-sets in one statement;
    should any of them lose, that transaction is rolled back and each machine is built
    again on its own.
    """
    ids = sorted(cmd.machine_ids) if cmd.machine_ids is not None else sorted(uow.machines.ids())
    managers = uow.members.with_roles({Role.MANAGER.value, Role.ADMIN.value})
    batch = _record_batch(cmd, uow, ids, managers) if len(ids) > 1 else {}
    published = []
    for machine_id in ids:
        if machine_id in batch:
            config = batch[machine_id]
        else:
            config = _record_config(cmd, uow, machine_id, managers)
        if config is not None:
            uow.configs.append(config)
            published.append(machine_id)
    return published


def _record_batch(
    cmd: PublishConfigs, uow: SqlAlchemyUnitOfWork, ids: list[str], managers: set[str]
) -> dict[str, ConfigMessage | None]:
    """The machines' signed configs from one read, their versions committed together
    (None: no controller); nothing if any compare-and-set lost (rolled back)."""
    machines = {m.id: m for m in uow.machines.with_controllers(ids)}
    reading = _AccessReading.of(uow, ids, managers)
    # Read once for every machine (not a few queries each: 1,000 machines).
    allowances = prepaid.Allowances.read(uow, set(reading.badges), cmd.at)
    results: dict[str, ConfigMessage | None] = {}
    versions: list[SnapshotRecord] = []

    def defer(record: SnapshotRecord) -> bool:
        versions.append(record)
        return True

    for machine_id in ids:
        started = time.perf_counter()
        machine = machines.get(machine_id)
        if machine is None or machine.controller is None:
            results[machine_id] = None
            continue
        grants = reading.grants(machine_id, cmd.at)
        staff = _staff(grants, managers, reading.badges_of)
        config = _try_record(
            cmd, uow, machine, machine.controller, grants, staff, started, allowances, defer
        )
        if config is not None:
            results[machine_id] = config
    # Every compare-and-set in one statement (one each took a round trip per machine).
    if not uow.machines.set_snapshots_if_versions(versions):
        uow.rollback()  # another publisher got some first: each machine is built alone
        return {}
    uow.commit()
    return results


def _record_config(
    cmd: PublishConfigs, uow: SqlAlchemyUnitOfWork, machine_id: str, managers: set[str]
) -> ConfigMessage | None:
    """The machine's signed config, its version committed; None without a controller."""
    started = time.perf_counter()
    for _attempt in range(_VERSION_ATTEMPTS):
        machine = uow.machines.get(machine_id)
        controller = machine.controller if machine else None
        if machine is None or controller is None:
            return None
        reading = _AccessReading.of(uow, [machine.id], managers)
        grants = reading.grants(machine.id, cmd.at)
        staff = _staff(grants, managers, reading.badges_of)
        config = _try_record(cmd, uow, machine, controller, grants, staff, started)
        if config is not None:
            uow.commit()
            return config
        uow.rollback()  # expires what we read: the next attempt reads the newer version
    raise ConcurrentPublishError(f"could not record a snapshot version for {machine_id}")


def _try_record(
    cmd: PublishConfigs,
    uow: SqlAlchemyUnitOfWork,
    machine: Machine,
    controller: Controller,
    grants: list[BadgeGrant],
    staff: list[StaffGrant],
    started: float,
    allowances: prepaid.Allowances | None = None,
    record: Callable[[SnapshotRecord], bool] | None = None,
) -> ConfigMessage | None:
    """Build the snapshot and record its version by compare-and-set (not committed);
    None if another publisher recorded a version since this one was read. Prepaid
    members' grants get what the controller needs to decide offline (`allowances`:
    read already for these grants' members). `record`: instead of the compare-and-set
    now, hand it the new version (a batch sets them all at once)."""
    previous = PublishedVersion(
        machine.snapshot_version, machine.snapshot_issued_at, machine.snapshot_digest
    )
    if allowances is None:
        allowances = prepaid.Allowances.read(uow, {g.member_id for g in grants}, cmd.at)
    grants = allowances.apply(machine.id, grants)
    settings = machine_settings(machine, plain_badges_allowed=uow.plain_badges_allowed)
    snapshot, digest = _build(cmd, machine, controller, settings, grants, staff, previous)
    new = SnapshotRecord(machine.id, previous.version, snapshot.version, snapshot.issued_at, digest)
    recorded = snapshot.version == previous.version or (record or _record_now(uow))(new)
    if not recorded:
        return None
    payload = encode_config(snapshot, bytes.fromhex(controller.key_hex))
    message = OutgoingMessage(config_topic(machine.site, machine.id), payload, retain=True)
    return ConfigMessage(machine.id, snapshot.version, message, started)


def _record_now(uow: SqlAlchemyUnitOfWork) -> Callable[[SnapshotRecord], bool]:
    def record(new: SnapshotRecord) -> bool:
        return uow.machines.set_snapshot_if_version(
            new.machine_id,
            expected=new.expected,
            version=new.version,
            issued_at=new.issued_at,
            digest=new.digest,
        )

    return record


def _build(
    cmd: PublishConfigs,
    machine: Machine,
    controller: Controller,
    settings: MachineSettings,
    grants: list[BadgeGrant],
    staff: list[StaffGrant],
    previous: PublishedVersion,
) -> tuple[PermissionSnapshot, str]:
    return build_snapshot(
        site=machine.site,
        machine_id=machine.id,
        controller_id=controller.id,
        key=bytes.fromhex(controller.key_hex),
        settings=settings,
        grants=grants,
        previous=previous,
        now=cmd.at,
        staff=staff,
        reissue_older_than_s=cmd.reissue_older_than_s,
    )


def machines_sharing_lapse(
    uow: SqlAlchemyUnitOfWork, member_id: str | None, machine_id: str
) -> set[str]:
    """The machines whose snapshot carries a lapse date of the member that a session on
    `machine_id` moves: every machine of each lapsing training type covering it that
    the member holds (a training lapses N months after its last use on any of them)."""
    if member_id is None:
        return set()
    return uow.training_types.machines_sharing_lapse(member_id, machine_id)


class SnapshotRefresher(PeriodicWorker):
    """Reissues each machine's snapshot before it is `interval_s` old, even when nothing
    changed, so that controllers configured with `snapshot_max_age_s` keep granting.

    It runs every quarter of the interval; each run republishes every machine's config
    and gives a new version and a fresh `issued_at` to the snapshots issued three
    quarters of the interval ago or more. So, while the server runs, no snapshot it
    publishes gets older than the interval plus the time of one run; a retained config
    lost by the broker is back within a quarter of the interval.
    """

    name = "snapshot-refresh"

    def __init__(
        self,
        bus: MessageBus,
        interval_s: float,
        *,
        clock: Callable[[], datetime] = utcnow,
        exclusive: ExclusiveRun | None = None,
    ) -> None:
        super().__init__(
            period_s=interval_s / 4, first_delay_s=interval_s / 4, exclusive=exclusive
        )
        self.bus = bus
        self.interval_s = interval_s
        self.clock = clock

    def run_once(self, now: datetime | None = None) -> list[str]:
        """Republish every config as of `now`; the machines published."""
        cmd = PublishConfigs(
            at=now or self.clock(), reissue_older_than_s=self.interval_s - self.period_s
        )
        published: list[str] = self.bus.handle(cmd)
        return published
