"""Anti-cloning end to end: controller apps with the real MFRC522Reader and `mfrc522`
package on the simulated chip, and the server's ingest and snapshots. Events reach the
server when a test syncs a controller (its outbox fed to ingest), configs reach a
controller when the test delivers the server's latest one: a controller not synced is
offline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from firmware_pi.reader import MFRC522Reader
from protocol import EventKind, Level, TopicKind, config_topic, events_topic
from server.adapters.orm import AuditEntry, Badge, ControllerFault
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from tests.firmware_pi.mfrc522_sim import (
    KEYS,
    MASTER,
    ReaderClock,
    SimulatedCard,
    SimulatedChip,
    install_fake_pi,
    protected_card,
)
from tests.firmware_pi.pi_helpers import FakeClock, Rig
from tests.server.conftest import KEY_HEX, SITE

ADA = "04A1B2C3"  # ada's badge in the `lab` fixture, autonomous on the laser


class Site:
    """The server and the controllers of the laser and the CNC, on one simulated chip."""

    def __init__(self, lab: ServerRuntime, chip: SimulatedChip, data_dir: Path) -> None:
        self.lab, self.chip = lab, chip
        self.sent: list[OutgoingMessage] = []
        lab.bus.publish = self.sent.append
        lab.bus.handle(cmds.AddMachine("cnc", "CNC mill", SITE, key_hex=KEY_HEX))
        lab.bus.handle(cmds.GrantTraining("ada", "cnc", Level.AUTONOMOUS))
        lab.bus.handle(cmds.PublishConfigs())  # the laser's too, sent before we listened
        self.readers: dict[str, MFRC522Reader] = {}
        self.reader_clocks: dict[str, ReaderClock] = {}
        self.rigs: dict[str, Rig] = {}
        self.synced: dict[str, int] = {}
        for machine in ("laser", "cnc"):
            clock = ReaderClock()
            reader = MFRC522Reader(start=False, clock=clock, badge_keys=KEYS)
            self.readers[machine], self.reader_clocks[machine] = reader, clock
            self.rigs[machine] = Rig(
                data_dir / machine, snapshot=None, reader=reader,
                clock=FakeClock(wall=time.time() - 3600), controller_id=machine, site=SITE,
                machine=machine, key_hex=KEY_HEX, badge_master_key_hex=MASTER.hex(),
            )
            self.synced[machine] = 0
            self.sync(machine)

    def tap(self, machine: str, card: SimulatedCard) -> None:
        self.reader_clocks[machine].t += 1.0
        self.chip.card = card
        self.readers[machine].poll_once()
        self.rigs[machine].step()
        self.chip.card = None

    def sync(self, machine: str) -> None:
        """The controller is online a moment: its new events to ingest, the latest
        config of its machine to it."""
        rig = self.rigs[machine]
        for event in rig.app.outbox.pending(limit=10_000):
            if event.seq > self.synced[machine]:
                self.lab.bus.handle(cmds.IngestEvent(events_topic(SITE, machine), event.encode()))
                self.synced[machine] = event.seq
        configs = [m for m in self.sent if m.topic == config_topic(SITE, machine)]
        if configs:
            rig.deliver(TopicKind.CONFIG, configs[-1].payload)

    def starts(self, machine: str) -> list[int | None]:
        started = self.rigs[machine].events(EventKind.SESSION_STARTED)
        return [s.get("badge_counter") for s in started]

    def denials(self, machine: str) -> list[str]:
        return [d["reason"] for d in self.rigs[machine].events(EventKind.BADGE_DENIED)]

    def badge(self) -> tuple[str, str, int | None]:
        with self.lab.new_uow() as uow:
            badge = uow.session.scalar(select(Badge).where(Badge.uid == ADA))
            assert badge is not None
            return badge.status, badge.protection, badge.counter_high

    def clone_faults(self) -> list[str]:
        with self.lab.new_uow() as uow:
            return list(uow.session.scalars(
                select(ControllerFault.message).where(ControllerFault.code == "badge_cloned")
            ))

    def close(self) -> None:
        for rig in self.rigs.values():
            rig.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the logic is the same on PostgreSQL (its schema is checked by
    tests/server/test_migrations.py), and CI time is short."""
    from server.adapters.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def site(lab: ServerRuntime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Site]:
    made = Site(lab, install_fake_pi(monkeypatch), tmp_path)
    yield made
    made.close()


def test_anticlone_copy_is_accepted_at_most_once_then_both_cards_are_denied(site: Site) -> None:
    original = protected_card(ADA, 5)
    copy = original.clone()  # a dump of the whole card at counter 5
    site.tap("laser", original)  # session, counter 6
    site.tap("laser", original)  # end
    site.sync("laser")
    assert site.badge() == ("active", "protected", 6)

    site.tap("laser", copy)  # the copy holds counter 5 and a valid MAC: accepted once
    site.tap("laser", copy)
    site.sync("laser")
    site.tap("laser", copy)
    site.tap("laser", original)

    assert site.starts("laser") == [6, 6]
    assert site.denials("laser") == ["unknown_badge", "unknown_badge"]  # off the snapshot
    assert not site.rigs["laser"].relay_on
    assert site.badge()[0] == "blocked"
    assert len(site.clone_faults()) == 1


def test_anticlone_clone_at_an_offline_controller_is_detected_after_sync(site: Site) -> None:
    original = protected_card(ADA, 5)
    copy = original.clone()
    site.tap("cnc", copy)  # the CNC's controller is offline: counter 6, not reported yet
    site.tap("cnc", copy)
    site.tap("laser", original)  # counter 6 again, reported at once
    site.tap("laser", original)
    site.sync("laser")
    assert site.badge()[0] == "active"

    site.sync("cnc")

    assert site.badge()[0] == "blocked"
    [fault] = site.clone_faults()
    assert "counter 6 written twice" in fault and "cnc" in fault and "laser" in fault
    site.sync("laser")  # the laser gets the snapshot without the badge
    site.tap("laser", original)
    assert site.denials("laser") == ["unknown_badge"]
    with site.lab.new_uow() as uow:
        assert uow.session.scalar(
            select(AuditEntry.action).where(AuditEntry.action == "badge.cloned")
        ) == "badge.cloned"


def test_anticlone_late_sessions_of_an_offline_controller_are_not_a_clone(site: Site) -> None:
    card = protected_card(ADA, 5)
    site.tap("cnc", card)  # counter 6 at the offline CNC
    site.tap("cnc", card)
    site.tap("laser", card)  # counter 7 at the laser, reported first
    site.tap("laser", card)
    site.sync("laser")

    site.sync("cnc")  # 6 arrives after 7: older, but written once

    assert site.badge() == ("active", "protected", 7)
    assert site.clone_faults() == []


def test_anticlone_badge_seen_with_its_sector_is_protected_in_the_snapshot(site: Site) -> None:
    site.tap("laser", protected_card(ADA, 0))
    site.tap("laser", protected_card(ADA, 0))  # (ends the session; the counter is on it)
    site.sync("laser")
    site.sync("laser")  # the snapshot now marks the badge protected

    site.tap("laser", SimulatedCard(bytes.fromhex(ADA), sak=0x08))  # a UID-only copy

    assert site.denials("laser") == ["badge_sector_missing"]
    assert not site.rigs["laser"].relay_on
