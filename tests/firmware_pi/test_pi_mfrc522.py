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
COMMAND, COMM_IRQ, ERROR, FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING, VERSION = (
    0x01, 0x04, 0x06, 0x09, 0x0A, 0x0C, 0x0D, 0x37)
TRANSCEIVE, IDLE, SOFT_RESET = 0x0C, 0x00, 0x0F
REQA, WUPA, ANTICOLL = 0x26, 0x52, 0x93


class SimulatedChip:
    """Enough of an MFRC522 for REQA/WUPA and cascade-level-1 anticollision."""

    def __init__(self) -> None:
        self.regs = [0] * 64
        self.regs[VERSION] = 0x92
        self.fifo: list[int] = []
        self.card: bytes | None = None  # 4-byte UID of the card in the field
        self.transfers = 0

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
        elif address == COMM_IRQ:
            # Bit 7 set: set the marked bits; clear: clear them.
            if value & 0x80:
                self.regs[COMM_IRQ] |= value & 0x7F
            else:
                self.regs[COMM_IRQ] &= ~value & 0x7F
        elif address == COMMAND:
            self.regs[COMMAND] = value
        elif address == BIT_FRAMING:
            self.regs[BIT_FRAMING] = value
            if value & 0x80 and self.regs[COMMAND] == TRANSCEIVE:
                self.transceive()
        else:
            self.regs[address] = value

    def transceive(self) -> None:
        sent, self.fifo = self.fifo, []
        self.regs[ERROR] = 0
        self.regs[CONTROL] = 0
        if self.card is None:
            self.regs[COMM_IRQ] = 0x01 | 0x10  # timer + idle: no answer
            return
        if sent[:1] in ([REQA], [WUPA]):
            self.fifo = [0x04, 0x00]  # ATQA
        elif sent[:2] == [ANTICOLL, 0x20]:
            uid = list(self.card)
            bcc = uid[0] ^ uid[1] ^ uid[2] ^ uid[3]
            self.fifo = [*uid, bcc]
        else:
            self.regs[COMM_IRQ] = 0x01 | 0x10
            return
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
