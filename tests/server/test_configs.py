"""Signed configs are republished after every change to trainings or badges."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import event as sa_event

from protocol import (
    EventKind,
    Level,
    PermissionSnapshot,
    badge_digest,
    config_topic,
    verify_config,
)
from server.adapters.orm import Machine
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.trainings import add_months
from server.service_layer import commands as cmds
from server.service_layer.commands import ConfigMessage, OutgoingMessage
from server.service_layer.configs import SnapshotRefresher, machines_sharing_lapse
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Ingest

KEY = bytes.fromhex(KEY_HEX)
ADA = badge_digest(KEY, "04A1B2C3")
HOUR = 3600


def _last_snapshot(sent: list[OutgoingMessage], machine_id: str = "laser") -> PermissionSnapshot:
    configs = [m for m in sent if m.topic == config_topic(SITE, machine_id)]
    assert configs, "no config was published"
    assert configs[-1].retain
    return verify_config(configs[-1].payload, KEY)


def test_publish_configs_grant_adds_badge_to_snapshot(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED))
    entry = _last_snapshot(sent).lookup(badge_digest(KEY, "04FFEE01"))
    assert entry is not None and entry.level is Level.SUPERVISED


def test_publish_configs_revoke_removes_badge_with_newer_version(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    before = _last_snapshot(sent)
    lab.bus.handle(cmds.RevokeTraining("ada", "laser"))
    after = _last_snapshot(sent)
    assert before.lookup(badge_digest(KEY, "04A1B2C3")) is not None
    assert after.lookup(badge_digest(KEY, "04A1B2C3")) is None
    assert after.version > before.version


def test_publish_configs_new_badge_of_trained_member_is_published(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.RegisterBadge("ada", "04A1B2C4"))
    assert _last_snapshot(sent).lookup(badge_digest(KEY, "04A1B2C4")) is not None


def test_publish_configs_republish_without_change_keeps_version(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    first = _last_snapshot(sent)
    lab.bus.handle(cmds.PublishConfigs())
    assert _last_snapshot(sent).version == first.version


def _issued(snapshot: PermissionSnapshot, seconds_later: float = 0) -> datetime:
    return datetime.fromtimestamp(snapshot.issued_at, UTC) + timedelta(seconds=seconds_later)


def test_snapshot_refresher_reissues_quiet_machine_after_interval(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    before = _last_snapshot(sent)
    SnapshotRefresher(lab.bus, interval_s=HOUR).run_once(_issued(before, HOUR))
    after = _last_snapshot(sent)
    assert after.issued_at == before.issued_at + HOUR
    assert after.version > before.version
    assert after.permissions == before.permissions


def test_snapshot_refresher_keeps_recent_snapshot(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    before = _last_snapshot(sent)
    # Within the last quarter of the interval: the next run, a quarter later, reissues it.
    SnapshotRefresher(lab.bus, interval_s=HOUR).run_once(_issued(before, HOUR * 3 / 4 - 1))
    assert _last_snapshot(sent) == before


def test_snapshot_refresher_runs_periodically_once_started(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    ran = threading.Semaphore(0)
    refresher = SnapshotRefresher(lab.bus, interval_s=0.04)
    real_run_once = refresher.run_once

    def counting_run_once(now: datetime | None = None) -> list[str]:
        published = real_run_once(now)
        ran.release()
        return published

    refresher.run_once = counting_run_once  # type: ignore[method-assign]
    refresher.start()
    try:
        assert ran.acquire(timeout=10) and ran.acquire(timeout=10)
    finally:
        refresher.stop()
    assert _last_snapshot(sent).lookup(ADA) is not None


def test_server_runtime_refreshes_snapshots_at_the_settings_interval(database_url: str) -> None:
    settings = Settings(database_url=database_url, snapshot_refresh_interval_s=600)
    runtime = ServerRuntime(settings)
    try:
        assert runtime.snapshot_refresher is not None
        assert runtime.snapshot_refresher.interval_s == 600
    finally:
        runtime.engine.dispose()


def _start_session(events: EventFactory, member_id: str = "ada") -> object:
    # After the training's grant (just now), so that the session moves the lapse date;
    # within the server's window of plausible wall times.
    events.wall = max(events.wall, float(int(time.time())) + 60.0)
    return events(
        EventKind.SESSION_STARTED,
        session_id="s1",
        badge_uid="04A1B2C3",
        member_id=member_id,
        level=Level.AUTONOMOUS.value,
        snapshot_version=1,
    )


def test_publish_configs_session_moving_lapse_date_republishes_it(
    lab: ServerRuntime, sent: list[OutgoingMessage], ingest: Ingest, events: EventFactory
) -> None:
    lab.bus.handle(cmds.UpdateTrainingType("laser", lapse_months=6))
    before = _last_snapshot(sent).lookup(ADA)
    ingest(_start_session(events))
    after = _last_snapshot(sent).lookup(ADA)
    started = datetime.fromtimestamp(events.wall, UTC)
    assert before is not None and after is not None
    assert after.expires_at == int(add_months(started, 6).timestamp())
    assert before.expires_at is not None and after.expires_at > before.expires_at


def test_publish_configs_session_moving_lapse_date_republishes_every_machine_of_the_type(
    lab: ServerRuntime, sent: list[OutgoingMessage], ingest: Ingest, events: EventFactory
) -> None:
    lab.bus.handle(cmds.AddMachine("laser-2", "Second laser", SITE, key_hex=KEY_HEX))
    lab.bus.handle(
        cmds.UpdateTrainingType("laser", machine_ids=("laser", "laser-2"), lapse_months=6)
    )
    ingest(_start_session(events))
    started = datetime.fromtimestamp(events.wall, UTC)
    entry = _last_snapshot(sent, "laser-2").lookup(ADA)
    assert entry is not None and entry.expires_at == int(add_months(started, 6).timestamp())


def test_send_configs_sends_only_configs_still_the_latest(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.AddMachine("zeta", "Zeta", SITE, key_hex=KEY_HEX))
    lab.bus.handle(cmds.PublishConfigs())
    with lab.new_uow() as uow:
        versions = {m: uow.machines.get(m).snapshot_version for m in ("laser", "zeta")}  # type: ignore[union-attr]
    old = OutgoingMessage(config_topic(SITE, "laser"), b"old", retain=True)
    new = OutgoingMessage(config_topic(SITE, "zeta"), b"new", retain=True)
    superseded = ConfigMessage("laser", versions["laser"] - 1, old)
    latest = ConfigMessage("zeta", versions["zeta"], new)
    sent.clear()
    assert lab.bus.send_configs([superseded, latest]) == ["zeta"]
    assert [m.payload for m in sent] == [b"new"]


def test_machines_sharing_lapse_reads_machine_ids_not_every_machine_of_a_covering_type(
    lab: ServerRuntime,
) -> None:
    # A training type may cover every machine of a network of labs: each session start
    # loaded all of them as objects (half the ingest thread's time with 1,000 machines).
    shop = [f"shop-{i}" for i in range(6)]
    for machine in shop:
        lab.bus.handle(cmds.AddMachine(machine, machine.title(), SITE, key_hex=KEY_HEX))
    lab.bus.handle(cmds.AddTrainingType("network", "Network", ("laser", *shop)))
    lab.bus.handle(cmds.AddTrainingType("wood", "Wood", ("laser", shop[0]), lapse_months=6))
    lab.bus.handle(cmds.AddTrainingType("metal", "Metal", ("laser", shop[1]), lapse_months=6))
    lab.bus.handle(cmds.AddTrainingType("paint", "Paint", ("laser", shop[2]), lapse_months=6))
    for held in ("network", "wood", "metal"):
        lab.bus.handle(cmds.GrantTraining("ada", held, Level.AUTONOMOUS))
    lab.bus.handle(cmds.RevokeTraining("ada", "metal"))
    loaded: list[Machine] = []

    def load(machine: Machine, _context: object) -> None:
        loaded.append(machine)

    sa_event.listen(Machine, "load", load)
    try:
        with lab.new_uow() as uow:
            shared = machines_sharing_lapse(uow, "ada", "laser")
    finally:
        sa_event.remove(Machine, "load", load)
    assert shared == {"laser", shop[0]}  # held and lapsing: not revoked, not unheld
    assert loaded == []


def _publish_statements(lab: ServerRuntime, machines: list[str]) -> int:
    """Statements a `PublishConfigs` of these (new) machines runs."""
    for machine in machines:
        lab.bus.handle(cmds.AddMachine(machine, machine.title(), SITE, key_hex=KEY_HEX))
    counted: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        counted.append(statement)

    sa_event.listen(lab.engine, "before_cursor_execute", count)
    try:
        assert lab.bus.handle(cmds.PublishConfigs(frozenset(machines))) == sorted(machines)
    finally:
        sa_event.remove(lab.engine, "before_cursor_execute", count)
    return len(counted)


def test_publish_configs_of_many_machines_takes_as_many_statements_as_of_two(
    lab: ServerRuntime,
) -> None:
    # A grant of a training covering a network's 1,000 machines: a prepaid reading and a
    # compare-and-set per machine made the API answer in 15 s on a loaded box.
    assert _publish_statements(lab, ["a0", "a1"]) == _publish_statements(
        lab, [f"b{i}" for i in range(9)]
    )
