"""Badge readers behind one small interface.

- MFRC522Reader: the common 13.56 MHz reader on SPI, through the `mfrc522` package
  (imported only when this reader is built: it refuses to import off a Raspberry Pi).
  Polled on its own thread, so it can tell whether a card is still on the reader
  (hold mode).
- KeyboardWedgeReader: the cheap USB readers that "type" the UID and Enter, read from
  an evdev input device (grabbed, so the keystrokes go nowhere else) or any text
  stream such as stdin. They cannot tell whether a card stays on the reader.
- SimulatedReader: taps and card placement from code (tests, demo, `fablab-pi simulate`).

Every reader reports *taps*: the same card seen again and again while it lies on the
reader is one tap (Debouncer).
"""

from __future__ import annotations

import abc
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any, Self

from firmware_pi.badge_sector import MISSING, TRANSPORT_KEY, BadgeKeys, SectorRead, SectorStatus
from protocol import ProtocolError, normalize_uid

log = logging.getLogger(__name__)

DEFAULT_REARM_S = 0.7  # a card must be away this long before it counts as a new tap
DEFAULT_POLL_S = 0.05
FAILURES_FOR_FAULT = 20  # polls failing in a row (1 s at the default rate) make a fault
# ISO/IEC 14443-3 type A: SELECT codes of cascade levels 1-3, the cascade tag that
# starts an incomplete level, the SAK bit saying the UID continues, and HLTA.
_SELECT_CODES = (0x93, 0x95, 0x97)
_CASCADE_TAG = 0x88
_SAK_CASCADE = 0x04
_HLTA = 0x50
_MF_CRYPTO1_ON = 0x08  # Status2Reg: MIFARE Classic authentication succeeded


class CardReader(abc.ABC):
    """Something that reports badge taps as normalized UIDs (uppercase hex)."""

    #: True when present() tells whether a card lies on the reader (hold mode needs it).
    senses_presence: bool = False

    @abc.abstractmethod
    def read(self, timeout: float) -> str | None:
        """Wait up to `timeout` seconds for a tap; its normalized UID, or None."""

    def present(self) -> str | None:
        """The UID of the card on the reader now, if the reader can tell; else None."""
        return None

    def describe(self) -> str:
        """One line for `fablab-pi check`."""
        return type(self).__name__

    def sector(self, uid: str) -> SectorRead | None:
        """What the last tap of `uid` found in its anti-cloning sector; None when this
        reader does not read sectors (every badge is then a plain badge)."""
        return None

    def write_counter(self, uid: str, counter: int) -> bool:
        """Write `counter` and its MAC to the sector of the badge `uid` on the reader;
        True only once read back as written."""
        return False

    def protect(self, uid: str) -> bool:
        """Enrollment: give the badge `uid` on the reader its anti-cloning sector
        (diversified keys, counter 0); True when it has a valid one."""
        return False

    def failure(self) -> str | None:
        """What is wrong while the reader keeps failing; None while it works (or when
        it cannot tell)."""
        return None

    def close(self) -> None:  # noqa: B027 - readers without resources need no close
        """Release the reader's device."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Debouncer:
    """Turns raw sightings ("card X seen at t", "nothing seen at t") into taps.

    A card counts as a new tap when it is seen after having been away (not seen) for
    at least `rearm_s`, or when a different card is seen. A card held on the reader,
    or read twice in a row by a reader that only reports reads, is one tap. Pure:
    time is passed in.
    """

    def __init__(self, *, rearm_s: float = DEFAULT_REARM_S) -> None:
        self.rearm_s = rearm_s
        self._last_uid: str | None = None
        self._last_seen = float("-inf")

    def seen(self, uid: str | None, now: float) -> str | None:
        """Feed one sighting; the UID when it is a new tap, else None."""
        if uid is None:
            return None
        is_tap = self.would_tap(uid, now)
        self._last_uid = uid
        self._last_seen = now
        return uid if is_tap else None

    def would_tap(self, uid: str, now: float) -> bool:
        """Would seeing `uid` at `now` be a new tap? (Changes nothing.)"""
        return uid != self._last_uid or now - self._last_seen >= self.rearm_s

    def present(self, now: float) -> str | None:
        """The card seen within the last `rearm_s`, if any."""
        if self._last_uid is not None and now - self._last_seen < self.rearm_s:
            return self._last_uid
        return None


class SimulatedReader(CardReader):
    """A reader whose taps come from `tap()` / `place()`, callable from any thread."""

    senses_presence = True

    def __init__(self) -> None:
        self._taps: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._closed = False
        self._on_reader: str | None = None

    def tap(self, uid: str) -> None:
        """Present a badge briefly; raises ProtocolError at once if the UID is not hex."""
        self._taps.put(normalize_uid(uid))

    def place(self, uid: str) -> None:
        """Put a badge on the reader and leave it there (a tap, then present)."""
        clean = normalize_uid(uid)
        self._on_reader = clean
        self._taps.put(clean)

    def remove(self) -> None:
        """Take the badge off the reader."""
        self._on_reader = None

    def read(self, timeout: float) -> str | None:
        if self._closed:
            return None
        try:
            return self._taps.get(timeout=timeout) if timeout > 0 else self._taps.get_nowait()
        except queue.Empty:
            return None

    def present(self) -> str | None:
        return self._on_reader

    def describe(self) -> str:
        return "simulated reader"

    def close(self) -> None:
        self._closed = True


class _PollingReader(CardReader):
    """A reader polled on its own thread every `poll_s`; subclasses implement `_poll()`."""

    def __init__(
        self, *, poll_s: float = DEFAULT_POLL_S, rearm_s: float = DEFAULT_REARM_S,
        clock: Callable[[], float] = time.monotonic, start: bool = True,
    ) -> None:
        self.poll_s = poll_s
        self._clock = clock
        self._debouncer = Debouncer(rearm_s=rearm_s)
        self._lock = threading.Lock()
        self._taps: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.polls = 0
        self._failing_in_a_row = 0
        self._last_error = ""
        if start:
            self.start()

    @abc.abstractmethod
    def _poll(self) -> str | None:
        """One look at the reader: the UID of a card in the field, or None."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def poll_once(self) -> None:
        """One poll, on the caller's thread (tests; the thread calls it in a loop)."""
        try:
            raw = self._poll()
        except Exception as exc:
            self.errors += 1
            with self._lock:
                self._failing_in_a_row += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            if self.errors in (1, 10) or self.errors % 1000 == 0:
                log.exception("card reader poll failed (%d failures so far)", self.errors)
            return
        self.polls += 1
        with self._lock:
            self._failing_in_a_row = 0
        uid: str | None = None
        if raw is not None:
            try:
                uid = normalize_uid(raw)
            except ProtocolError:
                log.warning("unreadable UID %r from the reader", raw)
        with self._lock:
            tap = self._debouncer.seen(uid, self._clock())
        if tap is not None:
            self._taps.put(tap)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_s)

    def read(self, timeout: float) -> str | None:
        try:
            return self._taps.get(timeout=timeout) if timeout > 0 else self._taps.get_nowait()
        except queue.Empty:
            return None

    def present(self) -> str | None:
        with self._lock:
            return self._debouncer.present(self._clock())

    def failure(self) -> str | None:
        with self._lock:
            if self._failing_in_a_row < FAILURES_FOR_FAULT:
                return None
            return f"{self._failing_in_a_row} reader polls failed in a row: {self._last_error}"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


class MFRC522Reader(_PollingReader):
    """An MFRC522 on SPI through the `mfrc522` package (pip install mfrc522).

    Each poll wakes every card in the field (WUPA, so a card left on the reader keeps
    answering), reads its whole UID by anticollision and select through every cascade
    level of ISO/IEC 14443-3 (4, 7 or 10 bytes: two NTAG or DESFire cards that share
    their first bytes are two badges), then halts it (HLTA) so that the next poll's
    WUPA wakes it again. A frame that fails its BCC, CRC_A or cascade rules is a miss,
    never a partial UID. Misses between reads of a card lying on the reader are
    normal; the Debouncer's `rearm_s` and the hold grace period absorb them.

    With `badge_keys`, a poll that makes a new tap also authenticates to the badge's
    anti-cloning sector with the card's diversified key and reads its counter block
    (`sector()`), in the same selection; `write_counter()` and `protect()` select the
    card again (it is halted between polls). One lock keeps the poll thread and these
    calls from interleaving on the SPI bus.
    """

    senses_presence = True

    def __init__(
        self,
        *,
        bus: int = 0,
        device: int = 0,
        speed_hz: int = 1_000_000,
        rst_pin: int = 25,
        poll_s: float = DEFAULT_POLL_S,
        rearm_s: float = DEFAULT_REARM_S,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
        badge_keys: BadgeKeys | None = None,
    ) -> None:
        try:
            from mfrc522 import MFRC522  # needs RPi.GPIO and spidev: only on a Pi
        except (ImportError, RuntimeError) as exc:
            raise RuntimeError(
                f"the MFRC522 reader needs the 'mfrc522' package on a Raspberry Pi ({exc})"
            ) from exc
        bcm = 11  # RPi.GPIO.BCM: pin numbers as gpiozero's
        self.rst_pin = rst_pin
        self.badge_keys = badge_keys
        self._chip_lock = threading.RLock()
        self._sectors: dict[str, SectorRead] = {}
        # The package logs every failed authentication at ERROR on its own handler; a
        # plain badge (no sector under our key) is normal, and this class reports what
        # matters itself.
        self.chip = MFRC522(bus=bus, device=device, spd=speed_hz, pin_mode=bcm,
                            pin_rst=rst_pin, debugLevel="CRITICAL")
        self.version = self.chip.Read_MFRC522(self.chip.VersionReg)
        if self.version in (0x00, 0xFF):
            log.error("MFRC522 answers version 0x%02X: check the SPI wiring", self.version)
        super().__init__(poll_s=poll_s, rearm_s=rearm_s, clock=clock, start=start)

    def _poll(self) -> str | None:
        with self._chip_lock:
            uid_bytes = self._select()
            if uid_bytes is None:
                return None
            uid = bytes(uid_bytes).hex().upper()
            try:
                if self.badge_keys is not None and self._new_tap(uid):
                    self._sectors[uid] = self._read_sector(self.badge_keys, uid, uid_bytes)
            finally:
                self._halt()
            return uid

    def _new_tap(self, uid: str) -> bool:
        with self._lock:
            return self._debouncer.would_tap(uid, self._clock())

    def _select(self) -> list[int] | None:
        """Wake the card in the field and select it through every cascade level: its
        UID bytes (the card is then ACTIVE), or None."""
        chip = self.chip
        status, _bits = chip.MFRC522_Request(chip.PICC_REQALL)
        if status != chip.MI_OK:
            return None
        uid: list[int] = []
        for select in _SELECT_CODES:
            level = self._cascade_level(select)
            if level is None:
                return None
            data, sak = level
            if data[0] == _CASCADE_TAG:
                if not sak & _SAK_CASCADE:
                    return None  # a cascade tag, yet the card says the UID is complete
                uid += data[1:]
                continue
            if sak & _SAK_CASCADE:
                return None  # the card says more follows, but this level has no tag
            return uid + data
        return None  # more than three cascade levels: not a type A card

    def _cascade_level(self, select: int) -> tuple[list[int], int] | None:
        """ANTICOLLISION then SELECT at one cascade level: its 4 bytes and the SAK."""
        chip = self.chip
        chip.Write_MFRC522(chip.BitFramingReg, 0x00)
        status, data, _bits = chip.MFRC522_ToCard(chip.PCD_TRANSCEIVE, [select, 0x20])
        if status != chip.MI_OK or len(data) != 5:
            return None
        if data[0] ^ data[1] ^ data[2] ^ data[3] != data[4]:
            return None  # BCC mismatch: a collision or a noisy read
        frame = [select, 0x70, *data]
        frame += chip.CalulateCRC(frame)
        status, answer, bits = chip.MFRC522_ToCard(chip.PCD_TRANSCEIVE, frame)
        if status != chip.MI_OK or bits != 24 or len(answer) < 3:
            return None
        if list(answer[1:3]) != chip.CalulateCRC([answer[0]]):
            return None
        return list(data[:4]), answer[0]

    def _halt(self) -> None:
        """HLTA: the card goes quiet until the next WUPA (it does not answer HLTA); then
        Crypto1 off, so that the next card starts unauthenticated."""
        chip = self.chip
        frame = [_HLTA, 0x00]
        chip.MFRC522_ToCard(chip.PCD_TRANSCEIVE, frame + chip.CalulateCRC(frame))
        chip.MFRC522_StopCrypto1()

    # -- anti-cloning sector (MIFARE Classic) ---------------------------------------------

    def _authenticate(self, key: bytes, block: int, uid_bytes: list[int]) -> bool:
        """MFAuthent with key A to `block`'s sector: True when Crypto1 is on. A MIFARE
        Classic card authenticates with the last 4 bytes of its UID (cascade level)."""
        chip = self.chip
        status = chip.MFRC522_Auth(chip.PICC_AUTHENT1A, block, list(key), uid_bytes[-4:])
        return status == chip.MI_OK and bool(chip.Read_MFRC522(chip.Status2Reg) & _MF_CRYPTO1_ON)

    def _read_block(self, block: int) -> bytes | None:
        data = self.chip.MFRC522_Read(block)
        return None if data is None else bytes(data)

    def _write_block(self, block: int, data: bytes) -> bool:
        """WRITE, then READ back: True only when the card holds `data`."""
        try:
            self.chip.MFRC522_Write(block, list(data))
        except IndexError:  # the package indexes the card's ACK even when none came
            return False
        return self._read_block(block) == data

    def _read_sector(self, keys: BadgeKeys, uid: str, uid_bytes: list[int]) -> SectorRead:
        if not self._authenticate(keys.key_a(uid), keys.trailer_block, uid_bytes):
            return MISSING
        return keys.check(uid, self._read_block(keys.data_block))

    def _selected(self, uid: str) -> list[int] | None:
        """Select the card again (halted since the poll): its UID bytes if it is `uid`."""
        uid_bytes = self._select()
        if uid_bytes is None or bytes(uid_bytes).hex().upper() != uid:
            return None
        return uid_bytes

    def sector(self, uid: str) -> SectorRead | None:
        if self.badge_keys is None:
            return None
        with self._chip_lock:
            return self._sectors.get(uid, MISSING)

    def write_counter(self, uid: str, counter: int) -> bool:
        keys = self.badge_keys
        if keys is None:
            return False
        with self._chip_lock:
            uid_bytes = self._selected(uid)
            try:
                if uid_bytes is None or not self._authenticate(
                    keys.key_a(uid), keys.trailer_block, uid_bytes
                ):
                    log.warning("badge %s: could not reach its sector to write counter %d",
                                uid, counter)
                    return False
                written = self._write_block(keys.data_block, keys.counter_block(uid, counter))
            finally:
                self._halt()
            if written:
                self._sectors[uid] = SectorRead(SectorStatus.VALID, counter)
            else:
                log.warning("badge %s: writing counter %d failed", uid, counter)
            return written

    def protect(self, uid: str) -> bool:
        keys = self.badge_keys
        if keys is None:
            return False
        with self._chip_lock:
            uid_bytes = self._selected(uid)
            if uid_bytes is None:
                return False
            try:
                already = self._read_sector(keys, uid, uid_bytes)
                if already.status is SectorStatus.VALID:
                    return True  # enrolled again: it keeps its sector and its counter
            finally:
                self._halt()
            return self._write_new_sector(keys, uid)

    def _write_new_sector(self, keys: BadgeKeys, uid: str) -> bool:
        """A blank card (transport key): counter 0 with its MAC, then the trailer with
        the diversified keys; checked by authenticating again with them."""
        uid_bytes = self._selected(uid)
        try:
            if uid_bytes is None or not self._authenticate(
                TRANSPORT_KEY, keys.trailer_block, uid_bytes
            ):
                log.warning("badge %s: its sector is neither blank nor ours", uid)
                return False
            if not self._write_block(keys.data_block, keys.counter_block(uid, 0)):
                return False
            try:
                self.chip.MFRC522_Write(keys.trailer_block, list(keys.trailer(uid)))
            except IndexError:
                return False
        finally:
            self._halt()
        uid_bytes = self._selected(uid)
        try:
            result = MISSING if uid_bytes is None else self._read_sector(keys, uid, uid_bytes)
        finally:
            self._halt()
        self._sectors[uid] = result
        return result.status is SectorStatus.VALID

    def describe(self) -> str:
        sector = "" if self.badge_keys is None else (
            f", anti-cloning sector {self.badge_keys.sector}"
        )
        return (f"MFRC522 on SPI (chip version 0x{self.version:02X}, reset pin {self.rst_pin}"
                f"{sector})")

    def failure(self) -> str | None:
        if self.version in (0x00, 0xFF):
            return f"the MFRC522 answers version 0x{self.version:02X}: check the SPI wiring"
        return super().failure()

    def close(self) -> None:
        super().close()
        try:
            self.chip.spi.close()
        except Exception:
            log.exception("error closing the MFRC522's SPI device")


_EVDEV_HEX = {f"KEY_{c}": c for c in "0123456789ABCDEF"}
_EVDEV_ENTER = ("KEY_ENTER", "KEY_KPENTER")


class KeyboardWedgeReader(CardReader):
    """A USB reader that types the UID then Enter; from an evdev device or a text stream.

    `device`: an evdev path such as /dev/input/by-id/usb-…-event-kbd (needs the `evdev`
    package; the device is grabbed), or "-" for stdin. `stream` injects any text stream.
    The same UID typed again within `rearm_s` is one tap. Decimal UIDs (many 125 kHz
    readers type 10 digits) are taken as they are: enrol badges on the same reader type.
    """

    def __init__(
        self,
        *,
        device: str = "-",
        stream: IO[str] | None = None,
        rearm_s: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
        evdev_module: Any = None,
    ) -> None:
        self.device = device
        self._clock = clock
        self._debouncer = Debouncer(rearm_s=rearm_s)
        self._taps: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._input_device: Any = None
        lines: Iterator[str]
        if stream is not None:
            lines = iter(stream.readline, "")
        elif device == "-":
            lines = iter(sys.stdin.readline, "")
        else:
            lines = self._evdev_lines(device, evdev_module)
        self._thread = threading.Thread(
            target=self._run, args=(lines,), name="KeyboardWedgeReader", daemon=True
        )
        self._thread.start()

    def _evdev_lines(self, path: str, evdev_module: Any) -> Iterator[str]:
        module = evdev_module
        if module is None:
            try:
                import evdev  # only for a keyboard reader on a device
            except ImportError as exc:
                raise RuntimeError(
                    "a keyboard reader on an input device needs the 'evdev' package"
                ) from exc
            module = evdev
        self._input_device = module.InputDevice(path)
        self._input_device.grab()  # the typed UIDs must not reach a console or login
        return self._keys_to_lines(module)

    def _keys_to_lines(self, evdev: Any) -> Iterator[str]:
        ecodes = evdev.ecodes
        buffer: list[str] = []
        for event in self._input_device.read_loop():
            if self._stop.is_set():
                return
            if event.type != ecodes.EV_KEY or event.value != 1:  # key down only
                continue
            name = ecodes.KEY.get(event.code)
            if isinstance(name, list):
                name = name[0]
            if name in _EVDEV_ENTER:
                yield "".join(buffer)
                buffer.clear()
            elif name in _EVDEV_HEX:
                buffer.append(_EVDEV_HEX[name])
                del buffer[:-40]  # a stuck key cannot grow this without bound

    def _run(self, lines: Iterator[str]) -> None:
        try:
            for line in lines:
                if self._stop.is_set():
                    return
                text = line.strip()
                if not text:
                    continue
                try:
                    uid = normalize_uid(text)
                except ProtocolError:
                    log.warning("keyboard reader typed %r: not a UID", text[:60])
                    continue
                tap = self._debouncer.seen(uid, self._clock())
                if tap is not None:
                    self._taps.put(tap)
        except OSError as exc:
            if not self._stop.is_set():
                log.error("keyboard reader %s failed: %s", self.device, exc)

    def read(self, timeout: float) -> str | None:
        try:
            return self._taps.get(timeout=timeout) if timeout > 0 else self._taps.get_nowait()
        except queue.Empty:
            return None

    def describe(self) -> str:
        source = "stdin" if self.device == "-" else self.device
        return f"keyboard-wedge reader on {source}"

    def close(self) -> None:
        self._stop.set()
        if self._input_device is not None:
            try:
                self._input_device.ungrab()
                self._input_device.close()
            except OSError:
                pass
