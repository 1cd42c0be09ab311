"""A register-level simulated MFRC522 and ISO/IEC 14443-3 type A cards (MIFARE Classic
1K memory and authentication), driven by the real `mfrc522` package through a fake
`spidev` and `RPi.GPIO` (the real ones refuse to run off a Pi).

Crypto1 is not modelled bit by bit: the chip's MFAuthent command checks the key against
the sector trailer and, as the `mfrc522` package sees it through the registers, sets
Status2Reg MFCrypto1On on success and leaves it off on failure. Frames exchanged while
authenticated are passed in clear; switching MFCrypto1On off makes the card drop out
(it no longer understands the reader), as a real card does.
"""

from __future__ import annotations

import copy
import importlib
import sys
import types

import pytest

from firmware_pi.badge_sector import BadgeKeys

# Registers and commands of the MFRC522 datasheet.
COMMAND, COMM_IRQ, DIV_IRQ, ERROR, STATUS2, FIFO_DATA, FIFO_LEVEL, CONTROL, BIT_FRAMING = (
    0x01, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x0D)
CRC_RESULT_MSB, CRC_RESULT_LSB, VERSION = 0x21, 0x22, 0x37
TRANSCEIVE, CALC_CRC, IDLE, AUTHENT, SOFT_RESET = 0x0C, 0x03, 0x00, 0x0E, 0x0F
MF_CRYPTO1_ON = 0x08  # Status2Reg bit 3
# PICC commands of ISO/IEC 14443-3 and MIFARE Classic.
REQA, WUPA, HLTA = 0x26, 0x52, 0x50
SEL_CL1, SEL_CL2, SEL_CL3 = 0x93, 0x95, 0x97
AUTH_A, AUTH_B, MF_READ, MF_WRITE = 0x60, 0x61, 0x30, 0xA0
MF_ACK = 0x0A  # 4-bit ACK
CASCADE_TAG = 0x88
SAK_CASCADE = 0x04  # SAK bit 3: the UID is not complete at this level
TRANSPORT_TRAILER = bytes.fromhex("FFFFFFFFFFFF" "FF078069" "FFFFFFFFFFFF")


def crc_a(data: list[int]) -> list[int]:
    """ISO/IEC 14443-3 CRC_A (initial 0x6363), low byte first."""
    crc = 0x6363
    for byte in data:
        byte ^= crc & 0xFF
        byte = (byte ^ (byte << 4)) & 0xFF
        crc = ((crc >> 8) ^ (byte << 8) ^ (byte << 3) ^ (byte >> 4)) & 0xFFFF
    return [crc & 0xFF, crc >> 8]


class SimulatedCard:
    """A PICC of ISO/IEC 14443-3 type A with a 4, 7 or 10-byte UID and, for MIFARE
    Classic 1K, 64 blocks of 16 bytes (sector trailers at the transport keys).

    States IDLE, READY (at cascade level `level`), ACTIVE, AUTHENTICATED (to a sector),
    HALT. WUPA wakes it from IDLE or HALT, REQA only from IDLE; at each cascade level it
    answers ANTICOLLISION with 4 bytes and their BCC (a cascade tag 0x88 and 3 UID bytes
    while the UID continues at the next level) and SELECT with a SAK (cascade bit set
    while the UID is incomplete) and CRC_A. Authenticated to a sector, it answers READ
    and the two steps of WRITE for that sector's blocks. HLTA halts an ACTIVE or
    AUTHENTICATED card; anything else unexpected sends it back to IDLE, as the standard
    says.
    """

    def __init__(self, uid: bytes, *, sak: int = 0x00) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError("a type A UID has 4, 7 or 10 bytes")
        self.uid = uid
        self.sak = sak  # the final SAK (e.g. 0x00 NTAG, 0x20 DESFire, 0x08 Classic)
        self.state = "IDLE"
        self.level = 0  # cascade level index while READY: 0, 1, 2
        self.blocks = [bytes(16)] * 64
        for sector in range(16):
            self.blocks[4 * sector + 3] = TRANSPORT_TRAILER
        self.sector: int | None = None  # the authenticated sector
        self.writing: int | None = None  # block of a WRITE waiting for its data
        self.answer_bits = 0  # valid bits of the last answer's last byte (0: all 8)
        self.fail_writes = False  # the card leaves the field before a write lands

    def clone(self) -> SimulatedCard:
        """A perfect copy (UID and whole memory), as a "magic" card made from a dump."""
        twin = SimulatedCard(self.uid, sak=self.sak)
        twin.blocks = copy.copy(self.blocks)
        return twin

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

    def authenticate(self, mode: int, block: int, key: bytes, uid4: bytes) -> bool:
        """MFAuthent: the key against the block's sector trailer (key A or B)."""
        if self.state not in ("ACTIVE", "AUTHENTICATED") or not 0 <= block < 64:
            self.state = "IDLE"
            return False
        trailer = self.blocks[4 * (block // 4) + 3]
        expected = trailer[:6] if mode == AUTH_A else trailer[10:]
        if mode not in (AUTH_A, AUTH_B) or key != expected or uid4 != bytes(self.uid[-4:]):
            self.state, self.sector = "IDLE", None
            return False
        self.state, self.sector = "AUTHENTICATED", block // 4
        return True

    def drop_crypto(self) -> None:
        """The reader switched Crypto1 off: an authenticated card no longer follows."""
        if self.state == "AUTHENTICATED":
            self.state, self.sector, self.writing = "IDLE", None, None

    def receive(self, frame: list[int]) -> list[int] | None:
        """The card's answer to one frame, or None (silence)."""
        self.answer_bits = 0
        if frame == [WUPA] and self.state in ("IDLE", "HALT"):
            self.state, self.level = "READY", 0
            return self.atqa()
        if frame == [REQA] and self.state == "IDLE":
            self.state, self.level = "READY", 0
            return self.atqa()
        if self.state == "READY" and frame[:1] == [(SEL_CL1, SEL_CL2, SEL_CL3)[self.level]]:
            return self._cascade(frame)
        if self.state in ("ACTIVE", "AUTHENTICATED") and frame[:2] == [HLTA, 0x00]:
            self.state, self.sector, self.writing = "HALT", None, None
            return None
        if self.state == "AUTHENTICATED":
            answer = self._memory(frame)
            if answer is not None:
                return answer
        self.state, self.sector, self.writing = "IDLE", None, None
        return None

    def _memory(self, frame: list[int]) -> list[int] | None:
        """READ and WRITE within the authenticated sector; None: not understood."""
        if frame[-2:] != crc_a(frame[:-2]):
            return None
        if self.writing is not None and len(frame) == 18:
            if self.fail_writes:
                return None
            self.blocks[self.writing] = bytes(frame[:16])
            self.writing = None
            self.answer_bits = 4
            return [MF_ACK]
        if len(frame) != 4 or frame[1] // 4 != self.sector:
            return None
        if frame[0] == MF_READ:
            data = list(self.blocks[frame[1]])
            return [*data, *crc_a(data)]
        if frame[0] == MF_WRITE:
            self.writing = frame[1]
            self.answer_bits = 4
            return [MF_ACK]
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
    level, HLTA, the coprocessor's CRC_A, MFAuthent and MIFARE READ/WRITE, with one card
    (or none) in the field."""

    def __init__(self) -> None:
        self.regs = [0] * 64
        self.regs[VERSION] = 0x92
        self.fifo: list[int] = []
        self._card: SimulatedCard | None = None
        self.transfers = 0
        self.frames: list[list[int]] = []  # every frame sent to the card
        self.gpio: types.ModuleType | None = None

    @property
    def card(self) -> SimulatedCard | None:
        return self._card

    @card.setter
    def card(self, card: SimulatedCard | bytes | None) -> None:
        """Put a card (or its UID: a fresh card in the field, state IDLE) or none."""
        if self._card is not None:
            self._card.state = "IDLE"  # a card leaving the field loses power
        self._card = SimulatedCard(card) if isinstance(card, bytes) else card
        self.regs[STATUS2] &= ~MF_CRYPTO1_ON

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
            elif value == AUTHENT:
                self.authenticate()
        elif address == BIT_FRAMING:
            self.regs[BIT_FRAMING] = value
            if value & 0x80 and self.regs[COMMAND] == TRANSCEIVE:
                self.transceive()
        elif address == STATUS2:
            self.regs[STATUS2] = value
            if not value & MF_CRYPTO1_ON and self._card is not None:
                self._card.drop_crypto()
        else:
            self.regs[address] = value

    def authenticate(self) -> None:
        """MFAuthent with the FIFO's 12 bytes: command, block, key (6), UID (4)."""
        sent, self.fifo = self.fifo, []
        self.regs[ERROR] = 0
        ok = (
            self._card is not None
            and len(sent) == 12
            and self._card.authenticate(sent[0], sent[1], bytes(sent[2:8]), bytes(sent[8:12]))
        )
        if ok:
            self.regs[STATUS2] |= MF_CRYPTO1_ON
            self.regs[COMM_IRQ] = 0x10  # idle: done
        else:
            self.regs[STATUS2] &= ~MF_CRYPTO1_ON
            self.regs[COMM_IRQ] = 0x10 | 0x01  # the card went silent: timer, then idle

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
        assert self._card is not None
        self.regs[CONTROL] = self._card.answer_bits  # RxLastBits
        self.regs[COMM_IRQ] = 0x20 | 0x10  # rx + idle


def install_fake_pi(monkeypatch: pytest.MonkeyPatch) -> SimulatedChip:
    """Fake `spidev` and `RPi.GPIO` talking to a new SimulatedChip, and the `mfrc522`
    package imported fresh on top of them."""
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
    simulated.gpio = gpio
    return simulated


# -- anti-cloning badges (firmware_pi.badge_sector) ---------------------------------------

MASTER = bytes(range(100, 132))  # the test site's badge master key
KEYS = BadgeKeys(MASTER)


class ReaderClock:
    """The reader's debounce clock, moved by the tests."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def protected_card(uid: str, counter: int, *, keys: BadgeKeys = KEYS) -> SimulatedCard:
    """A MIFARE Classic badge whose sector holds `counter` and its MAC."""
    card = SimulatedCard(bytes.fromhex(uid), sak=0x08)
    card.blocks[keys.data_block] = keys.counter_block(uid, counter)
    card.blocks[keys.trailer_block] = keys.trailer(uid)
    return card
