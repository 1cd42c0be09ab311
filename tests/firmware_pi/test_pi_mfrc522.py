"""MFRC522Reader under the real `mfrc522` package, talking to a register-level simulated
chip through a fake `spidev` and `RPi.GPIO` (the real ones refuse to run off a Pi).

The simulated chip is in `mfrc522_sim.py`. The package is imported fresh inside the
fakes, so every line of MFRC522Reader and of the package's register code runs: a typo
in either fails here."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from firmware_pi.reader import MFRC522Reader
from tests.firmware_pi.mfrc522_sim import (
    CASCADE_TAG,
    SAK_CASCADE,
    SEL_CL1,
    SEL_CL2,
    WUPA,
    SimulatedCard,
    SimulatedChip,
    crc_a,
    install_fake_pi,
)


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedChip]:
    yield install_fake_pi(monkeypatch)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_reader(clock: Clock) -> MFRC522Reader:
    return MFRC522Reader(rst_pin=25, start=False, clock=clock, rearm_s=0.7)


def test_mfrc522_reader_resets_chip_on_the_configured_pin(chip: SimulatedChip) -> None:
    reader = make_reader(Clock())
    assert reader.version == 0x92
    assert ("setmode", 11) in chip.gpio.calls  # type: ignore[attr-defined]
    assert ("output", 25, 1) in chip.gpio.calls  # type: ignore[attr-defined]
    assert "0x92" in reader.describe()
    reader.close()


def test_mfrc522_reader_reads_uid_once_while_card_lies_on_it(chip: SimulatedChip) -> None:
    clock = Clock()
    reader = make_reader(clock)
    reader.poll_once()
    assert reader.read(0) is None
    assert reader.present() is None
    chip.card = bytes.fromhex("04A1B2C3")
    for _ in range(20):  # one second of polls with the card on the reader
        reader.poll_once()
        clock.t += 0.05
    assert reader.read(0) == "04A1B2C3"
    assert reader.read(0) is None  # debounced: one tap
    assert reader.present() == "04A1B2C3"
    assert reader.errors == 0
    reader.close()


def test_mfrc522_reader_counts_a_new_tap_after_removal(chip: SimulatedChip) -> None:
    clock = Clock()
    reader = make_reader(clock)
    chip.card = bytes.fromhex("04A1B2C3")
    reader.poll_once()
    chip.card = None
    for _ in range(20):
        clock.t += 0.05
        reader.poll_once()
    assert reader.present() is None
    chip.card = bytes.fromhex("04A1B2C3")
    reader.poll_once()
    assert [reader.read(0), reader.read(0)] == ["04A1B2C3", "04A1B2C3"]
    reader.close()


def test_mfrc522_reader_switches_cards_at_once(chip: SimulatedChip) -> None:
    clock = Clock()
    reader = make_reader(clock)
    chip.card = bytes.fromhex("04A1B2C3")
    reader.poll_once()
    chip.card = bytes.fromhex("04B0B0B0")
    clock.t += 0.05
    reader.poll_once()
    assert [reader.read(0), reader.read(0)] == ["04A1B2C3", "04B0B0B0"]
    reader.close()


def test_mfrc522_reader_polls_on_its_thread_and_closes_spi(chip: SimulatedChip) -> None:
    reader = MFRC522Reader(poll_s=0.001)
    chip.card = bytes.fromhex("04CAFE01")
    try:
        assert reader.read(2.0) == "04CAFE01"
    finally:
        reader.close()
    assert reader.chip.spi.closed


def test_mfrc522_reader_explains_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mfrc522", None)
    with pytest.raises(RuntimeError, match="mfrc522"):
        MFRC522Reader(start=False)


@pytest.mark.parametrize(
    "uid",
    [
        pytest.param("04A1B2C3", id="4-byte"),
        pytest.param("04112233445566", id="7-byte-ntag"),
        pytest.param("04112233445566778899", id="10-byte"),
    ],
)
def test_mfrc522_reader_reads_the_full_uid_through_every_cascade_level(
    chip: SimulatedChip, uid: str
) -> None:
    """Issue 7 defect 9: a 7- or 10-byte UID is read in full, not cut to 0x88 + 3 bytes."""
    reader = make_reader(Clock())
    chip.card = bytes.fromhex(uid)

    reader.poll_once()

    assert reader.read(0) == uid
    assert reader.errors == 0
    reader.close()


def test_mfrc522_reader_tells_apart_7_byte_cards_sharing_their_first_bytes(
    chip: SimulatedChip,
) -> None:
    """Two NTAGs of one maker share the first cascade level (0x88 04 11 22)."""
    clock = Clock()
    reader = make_reader(clock)
    chip.card = SimulatedCard(bytes.fromhex("04112233445566"), sak=0x00)
    reader.poll_once()
    chip.card = SimulatedCard(bytes.fromhex("041122AABBCCDD"), sak=0x20)
    clock.t += 0.05
    reader.poll_once()

    assert [reader.read(0), reader.read(0)] == ["04112233445566", "041122AABBCCDD"]
    reader.close()


def test_mfrc522_reader_keeps_reading_a_7_byte_card_left_on_it(chip: SimulatedChip) -> None:
    """Every poll reads the card again (it is halted after each read and woken by WUPA)."""
    clock = Clock()
    reader = make_reader(clock)
    chip.card = bytes.fromhex("04112233445566")
    for _ in range(20):
        reader.poll_once()
        clock.t += 0.05
    assert reader.read(0) == "04112233445566"
    assert reader.read(0) is None
    assert reader.present() == "04112233445566"
    assert chip.card is not None and chip.card.state == "HALT"
    reader.close()


def test_simulated_card_answers_cascade_levels_as_iso_14443_says() -> None:
    card = SimulatedCard(bytes.fromhex("04112233445566"), sak=0x20)
    assert card.receive([WUPA]) == [0x44, 0x00]  # ATQA: double-size UID
    cl1 = card.receive([SEL_CL1, 0x20])
    assert cl1 == [CASCADE_TAG, 0x04, 0x11, 0x22, CASCADE_TAG ^ 0x04 ^ 0x11 ^ 0x22]
    select1 = [SEL_CL1, 0x70, *cl1]
    assert card.receive([*select1, *crc_a(select1)]) == [SAK_CASCADE, *crc_a([SAK_CASCADE])]
    cl2 = card.receive([SEL_CL2, 0x20])
    assert cl2 is not None and cl2[:4] == [0x33, 0x44, 0x55, 0x66]
    select2 = [SEL_CL2, 0x70, *cl2]
    assert card.receive([*select2, *crc_a(select2)]) == [0x20, *crc_a([0x20])]
    assert card.state == "ACTIVE"
    assert card.receive([WUPA]) is None  # ACTIVE ignores WUPA (and falls back to IDLE)


def test_mfrc522_reader_reports_a_chip_that_does_not_answer(chip: SimulatedChip) -> None:
    chip.regs[0x37] = 0x00  # VersionReg reads 0: nothing on the SPI bus
    reader = make_reader(Clock())

    failure = reader.failure()

    assert failure is not None and "SPI wiring" in failure
    reader.close()


def test_mfrc522_reader_reports_polls_failing_in_a_row(chip: SimulatedChip) -> None:
    reader = make_reader(Clock())
    chip.card = bytes.fromhex("04A1B2C3")
    reader.poll_once()
    assert reader.failure() is None

    def broken(data: list[int]) -> list[int]:
        raise OSError("SPI transfer failed")

    chip.xfer2 = broken  # type: ignore[method-assign]
    for _ in range(20):
        reader.poll_once()

    failure = reader.failure()
    assert failure is not None and "20 reader polls failed" in failure
    reader.close()
