"""MFRC522Reader under the real `mfrc522` package, talking to a register-level simulated
chip through a fake `spidev` and `RPi.GPIO` (the real ones refuse to run off a Pi).

The package is imported fresh inside the fakes, so every line of MFRC522Reader and of
the package's register code runs: a typo in either fails here."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator

import pytest

from firmware_pi.reader import MFRC522Reader

# Registers and commands of the MFRC522 datasheet.
COMMAND, COMM_IRQ, DIV_IRQ, ERROR, FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING = (
    0x01, 0x04, 0x05, 0x06, 0x09, 0x0A, 0x0C, 0x0D)
CRC_RESULT_MSB, CRC_RESULT_LSB, VERSION = 0x21, 0x22, 0x37
TRANSCEIVE, CALC_CRC, IDLE, SOFT_RESET = 0x0C, 0x03, 0x00, 0x0F
# PICC commands of ISO/IEC 14443-3.
REQA, WUPA, HLTA = 0x26, 0x52, 0x50
SEL_CL1, SEL_CL2, SEL_CL3 = 0x93, 0x95, 0x97
CASCADE_TAG = 0x88
SAK_CASCADE = 0x04  # SAK bit 3: the UID is not complete at this level


def crc_a(data: list[int]) -> list[int]:
    """ISO/IEC 14443-3 CRC_A (initial 0x6363), low byte first."""
    crc = 0x6363
    for byte in data:
        byte ^= crc & 0xFF
        byte = (byte ^ (byte << 4)) & 0xFF
        crc = ((crc >> 8) ^ (byte << 8) ^ (byte << 3) ^ (byte >> 4)) & 0xFFFF
    return [crc & 0xFF, crc >> 8]


class SimulatedCard:
    """A PICC of ISO/IEC 14443-3 type A with a 4, 7 or 10-byte UID.

    States IDLE, READY (at cascade level `level`), ACTIVE, HALT. WUPA wakes it from
    IDLE or HALT, REQA only from IDLE; at each cascade level it answers ANTICOLLISION
    with 4 bytes and their BCC (a cascade tag 0x88 and 3 UID bytes while the UID
    continues at the next level) and SELECT with a SAK (cascade bit set while the UID
    is incomplete) and CRC_A. HLTA halts an ACTIVE card; anything else unexpected
    sends it back to IDLE, as the standard says.
    """

    def __init__(self, uid: bytes, *, sak: int = 0x00) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError("a type A UID has 4, 7 or 10 bytes")
        self.uid = uid
        self.sak = sak  # the final SAK (e.g. 0x00 NTAG, 0x20 DESFire, 0x08 Classic)
        self.state = "IDLE"
        self.level = 0  # cascade level index while READY: 0, 1, 2

    @property
    def levels(self) -> int:
        return {4: 1, 7: 2, 10: 3}[len(self.uid)]

    def atqa(self) -> list[int]:
        size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(self.uid)]
        return [0x04 | size_bits, 0x00]

    def level_bytes(self, level: int) -> list[int]:
        """The 4 UID-CLn bytes of a cascade level (with the cascade tag if not last)."""
        last = level == self.levels - 1
        chunk = list(self.uid[3 * level:3 * level + (4 if last else 3)])
        return chunk if last else [CASCADE_TAG, *chunk]

    def receive(self, frame: list[int]) -> list[int] | None:
        """The card's answer to one frame, or None (silence)."""
        if frame == [WUPA] and self.state in ("IDLE", "HALT"):
            self.state, self.level = "READY", 0
            return self.atqa()
        if frame == [REQA] and self.state == "IDLE":
            self.state, self.level = "READY", 0
            return self.atqa()
        if self.state == "READY" and frame[:1] == [(SEL_CL1, SEL_CL2, SEL_CL3)[self.level]]:
            return self._cascade(frame)
        if self.state == "ACTIVE" and frame[:2] == [HLTA, 0x00]:
            self.state = "HALT"
            return None
        self.state = "IDLE"  # an unexpected frame: back to IDLE, silently
        return None

    def _cascade(self, frame: list[int]) -> list[int] | None:
        data = self.level_bytes(self.level)
        bcc = data[0] ^ data[1] ^ data[2] ^ data[3]
        if frame[1:] == [0x20]:  # ANTICOLLISION: the whole UID-CLn, no bits known yet
            return [*data, bcc]
        if len(frame) == 9 and frame[1] == 0x70 and frame[2:7] == [*data, bcc]:
            if frame[7:] != crc_a(frame[:7]):
                self.state = "IDLE"
                return None
            if self.level < self.levels - 1:
                self.level += 1
                sak = SAK_CASCADE
            else:
                self.state = "ACTIVE"
                sak = self.sak & ~SAK_CASCADE
            return [sak, *crc_a([sak])]
        self.state = "IDLE"
        return None


class SimulatedChip:
    """Enough of an MFRC522 for WUPA/REQA, anticollision and select at every cascade
    level, HLTA and the coprocessor's CRC_A, with one card (or none) in the field."""

    def __init__(self) -> None:
        self.regs = [0] * 64
        self.regs[VERSION] = 0x92
        self.fifo: list[int] = []
        self._card: SimulatedCard | None = None
        self.transfers = 0
        self.frames: list[list[int]] = []  # every frame sent to the card

    @property
    def card(self) -> SimulatedCard | None:
        return self._card

    @card.setter
    def card(self, card: SimulatedCard | bytes | None) -> None:
        """Put a card (or its UID: a fresh card in the field, state IDLE) or none."""
        self._card = SimulatedCard(card) if isinstance(card, bytes) else card

    def xfer2(self, data: list[int]) -> list[int]:
        self.transfers += 1
        address = (data[0] >> 1) & 0x3F
        if data[0] & 0x80:  # read
            if address == FIFO_DATA:
                return [0, self.fifo.pop(0) if self.fifo else 0]
            if address == FIFO_LEVEL:
                return [0, len(self.fifo)]
            return [0, self.regs[address]]
        self.write(address, data[1])
        return [0, 0]

    def write(self, address: int, value: int) -> None:
        if address == FIFO_DATA:
            self.fifo.append(value)
        elif address == FIFO_LEVEL and value & 0x80:
            self.fifo.clear()
        elif address in (COMM_IRQ, DIV_IRQ):
            # Bit 7 set: set the marked bits; clear: clear them.
            if value & 0x80:
                self.regs[address] |= value & 0x7F
            else:
                self.regs[address] &= ~value & 0x7F
        elif address == COMMAND:
            self.regs[COMMAND] = value
            if value == CALC_CRC:
                low, high = crc_a(self.fifo)
                self.fifo = []
                self.regs[CRC_RESULT_LSB], self.regs[CRC_RESULT_MSB] = low, high
                self.regs[DIV_IRQ] |= 0x04  # CRCIRq
        elif address == BIT_FRAMING:
            self.regs[BIT_FRAMING] = value
            if value & 0x80 and self.regs[COMMAND] == TRANSCEIVE:
                self.transceive()
        else:
            self.regs[address] = value

    def transceive(self) -> None:
        sent, self.fifo = self.fifo, []
        self.frames.append(sent)
        self.regs[ERROR] = 0
        self.regs[CONTROL] = 0
        answer = None if self._card is None else self._card.receive(sent)
        if answer is None:
            self.regs[COMM_IRQ] = 0x01 | 0x10  # timer + idle: no answer
            return
        self.fifo = answer
        self.regs[COMM_IRQ] = 0x20 | 0x10  # rx + idle


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedChip]:
    simulated = SimulatedChip()
    spidev = types.ModuleType("spidev")

    class SpiDev:
        def __init__(self) -> None:
            self.max_speed_hz = 0
            self.closed = False

        def open(self, bus: int, device: int) -> None:
            self.bus, self.device = bus, device

        def xfer2(self, data: list[int]) -> list[int]:
            assert not self.closed
            return simulated.xfer2(list(data))

        def close(self) -> None:
            self.closed = True

    spidev.SpiDev = SpiDev  # type: ignore[attr-defined]
    gpio = types.ModuleType("RPi.GPIO")
    gpio.BCM, gpio.BOARD, gpio.OUT = 11, 10, 0  # type: ignore[attr-defined]
    gpio.calls = []  # type: ignore[attr-defined]
    gpio.getmode = lambda: None  # type: ignore[attr-defined]
    gpio.setmode = lambda mode: gpio.calls.append(("setmode", mode))  # type: ignore[attr-defined]
    gpio.setup = lambda pin, mode: gpio.calls.append(("setup", pin))  # type: ignore[attr-defined]
    gpio.output = lambda pin, v: gpio.calls.append(("output", pin, v))  # type: ignore[attr-defined]
    gpio.cleanup = lambda *a: gpio.calls.append(("cleanup",))  # type: ignore[attr-defined]
    rpi = types.ModuleType("RPi")
    rpi.GPIO = gpio  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spidev", spidev)
    monkeypatch.setitem(sys.modules, "RPi", rpi)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
    for name in [m for m in sys.modules if m == "mfrc522" or m.startswith("mfrc522.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("mfrc522")
    simulated.gpio = gpio  # type: ignore[attr-defined]
    yield simulated


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
