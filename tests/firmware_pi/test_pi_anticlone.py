"""Anti-cloning on the controller: the real MFRC522Reader and `mfrc522` package on the
simulated chip (MIFARE Classic authentication, READ, WRITE), the real controller app.

What the controller alone decides: a sector whose MAC does not verify, a protected
badge without its sector, a plain badge where the lab refuses them, a failed write;
and that a granted badge gets counter + 1 before the relay moves. Clones of the whole
sector are caught by the server (tests/server/test_anticlone_sync.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from firmware_pi.badge_sector import (
    DEFAULT_KEYS,
    BadgeKeys,
    SectorRead,
    SectorStatus,
)
from firmware_pi.reader import MFRC522Reader
from protocol import CommandKind, EventKind, PermissionSnapshot
from tests.firmware_pi.mfrc522_sim import (
    KEYS,
    MASTER,
    ReaderClock,
    SimulatedCard,
    SimulatedChip,
    install_fake_pi,
    protected_card,
)
from tests.firmware_pi.pi_helpers import ALICE, Rig, lab_snapshot


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedChip]:
    yield install_fake_pi(monkeypatch)


def counter_on(card: SimulatedCard) -> int:
    read = KEYS.check(card.uid.hex().upper(), card.blocks[KEYS.data_block])
    assert read.status is SectorStatus.VALID and read.counter is not None
    return read.counter


class Bench:
    """A controller app with an MFRC522 on the simulated chip; cards tapped one by one."""

    def __init__(
        self, data_dir: Path, chip: SimulatedChip, snapshot: PermissionSnapshot | None = None
    ) -> None:
        self.chip = chip
        self.reader_clock = ReaderClock()
        self.reader = MFRC522Reader(start=False, clock=self.reader_clock, badge_keys=KEYS)
        snapshot = snapshot or lab_snapshot()
        self.rig = Rig(data_dir, snapshot=snapshot, reader=self.reader,
                       badge_master_key_hex=MASTER.hex())

    def tap(self, card: SimulatedCard) -> None:
        """Lay the card on the reader for one poll, run the loop, take it away."""
        self.reader_clock.t += 1.0  # long enough away: a new tap
        self.chip.card = card
        self.reader.poll_once()
        self.rig.step()
        self.chip.card = None

    def denials(self) -> list[str]:
        return [d["reason"] for d in self.rig.events(EventKind.BADGE_DENIED)]

    def starts(self) -> list[dict[str, object]]:
        return self.rig.events(EventKind.SESSION_STARTED)


@pytest.fixture
def bench(tmp_path: Path, chip: SimulatedChip) -> Iterator[Bench]:
    made = Bench(tmp_path, chip)
    yield made
    made.rig.close()


def test_badge_keys_are_diversified_per_card_and_never_default() -> None:
    keys = {KEYS.key_a("04A1B2C3"), KEYS.key_a("04A1B2C4"), KEYS.key_b("04A1B2C3")}
    assert len(keys) == 3
    assert not keys & DEFAULT_KEYS
    assert BadgeKeys(bytes(32)).key_a("04A1B2C3") != KEYS.key_a("04A1B2C3")


def test_badge_keys_check_refuses_a_block_of_another_card() -> None:
    block = KEYS.counter_block("04A1B2C3", 7)
    assert KEYS.check("04A1B2C3", block) == SectorRead(SectorStatus.VALID, 7)
    assert KEYS.check("04A1B2C4", block).status is SectorStatus.MAC_INVALID
    forged = block[:3] + (8).to_bytes(4, "big") + block[7:]
    assert KEYS.check("04A1B2C3", forged).status is SectorStatus.MAC_INVALID


def test_anticlone_granted_tap_writes_counter_plus_one_and_reports_it(bench: Bench) -> None:
    card = protected_card(ALICE, 5)

    bench.tap(card)

    assert bench.rig.relay_on
    assert counter_on(card) == 6
    assert [s["badge_counter"] for s in bench.starts()] == [6]


def test_anticlone_counter_is_written_before_the_relay_moves_or_the_start_is_recorded(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, int]] = []
    write = bench.reader.write_counter

    def watched(uid: str, counter: int) -> bool:
        seen.append((bench.rig.relay_on, len(bench.starts())))
        return write(uid, counter)

    monkeypatch.setattr(bench.reader, "write_counter", watched)

    bench.tap(protected_card(ALICE, 5))

    assert seen == [(False, 0)]
    assert bench.rig.relay_on


def test_anticlone_each_granted_tap_moves_the_counter(bench: Bench) -> None:
    card = protected_card(ALICE, 0)
    for _ in range(3):  # start, end, start, end, start
        bench.tap(card)
        bench.tap(card)

    assert [s["badge_counter"] for s in bench.starts()] == [1, 2, 3]
    assert counter_on(card) == 3


def test_anticlone_mac_that_does_not_verify_is_denied(bench: Bench) -> None:
    card = protected_card(ALICE, 5)
    block = bytearray(card.blocks[KEYS.data_block])
    block[6] += 10  # counter raised without the MAC key
    card.blocks[KEYS.data_block] = bytes(block)

    bench.tap(card)

    assert not bench.rig.relay_on
    assert bench.denials() == ["badge_mac_invalid"]
    assert bench.starts() == []


def test_anticlone_sector_copied_to_another_uid_is_denied(bench: Bench) -> None:
    """A dump of Alice's sector on a card with another UID: its MAC names Alice's UID."""
    original = protected_card(ALICE, 5)
    other = SimulatedCard(bytes.fromhex("04B0B0B0"), sak=0x08)  # Bob's UID
    other.blocks[KEYS.data_block] = original.blocks[KEYS.data_block]
    other.blocks[KEYS.trailer_block] = KEYS.trailer("04B0B0B0")

    bench.tap(other)

    assert bench.denials() == ["badge_mac_invalid"]


def test_anticlone_uid_only_copy_of_a_protected_badge_is_denied(
    tmp_path: Path, chip: SimulatedChip
) -> None:
    snapshot = lab_snapshot()
    snapshot = replace(snapshot, permissions=tuple(
        replace(entry, protected=True) for entry in snapshot.permissions
    ))
    bench = Bench(tmp_path, chip, snapshot)
    try:
        bench.tap(SimulatedCard(bytes.fromhex(ALICE), sak=0x08))  # same UID, blank sector

        assert not bench.rig.relay_on
        assert bench.denials() == ["badge_sector_missing"]
    finally:
        bench.rig.close()


def test_anticlone_plain_badge_works_where_the_lab_allows_them(bench: Bench) -> None:
    bench.tap(SimulatedCard(bytes.fromhex(ALICE), sak=0x08))

    assert bench.rig.relay_on
    assert "badge_counter" not in bench.starts()[0]


def test_anticlone_plain_badge_is_denied_where_the_lab_refuses_them(
    tmp_path: Path, chip: SimulatedChip
) -> None:
    bench = Bench(tmp_path, chip, lab_snapshot(plain_badges_allowed=False))
    try:
        bench.tap(SimulatedCard(bytes.fromhex(ALICE), sak=0x08))

        assert not bench.rig.relay_on
        assert bench.denials() == ["plain_badge_refused"]
    finally:
        bench.rig.close()


def test_anticlone_failed_write_denies_and_leaves_the_relay_off(bench: Bench) -> None:
    card = protected_card(ALICE, 5)
    card.fail_writes = True  # taken away before the write lands

    bench.tap(card)

    assert not bench.rig.relay_on
    assert bench.denials() == ["badge_write_failed"]
    assert counter_on(card) == 5


def test_anticlone_enrollment_writes_the_sector_with_diversified_keys(bench: Bench) -> None:
    blank = SimulatedCard(bytes.fromhex("04E0E0E0"), sak=0x08)
    bench.rig.command(CommandKind.ENROLL_BADGE)

    bench.tap(blank)

    assert bench.rig.events(EventKind.BADGE_ENROLLED)[0]["protected"] is True
    assert counter_on(blank) == 0
    trailer = blank.blocks[KEYS.trailer_block]
    assert trailer[:6] == KEYS.key_a("04E0E0E0")
    assert trailer[:6] not in DEFAULT_KEYS


def test_mfrc522_reader_reads_no_sector_with_a_wrong_master_key(chip: SimulatedChip) -> None:
    clock = ReaderClock()
    reader = MFRC522Reader(start=False, clock=clock, badge_keys=BadgeKeys(bytes(32)))
    chip.card = protected_card(ALICE, 5)

    reader.poll_once()

    assert reader.read(0) == ALICE
    assert reader.sector(ALICE) == SectorRead(SectorStatus.MISSING)
    reader.close()
