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
        is_tap = uid != self._last_uid or now - self._last_seen >= self.rearm_s
        self._last_uid = uid
        self._last_seen = now
        return uid if is_tap else None

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
    ) -> None:
        try:
            from mfrc522 import MFRC522  # needs RPi.GPIO and spidev: only on a Pi
        except (ImportError, RuntimeError) as exc:
            raise RuntimeError(
                f"the MFRC522 reader needs the 'mfrc522' package on a Raspberry Pi ({exc})"
            ) from exc
        bcm = 11  # RPi.GPIO.BCM: pin numbers as gpiozero's
        self.rst_pin = rst_pin
        self.chip = MFRC522(bus=bus, device=device, spd=speed_hz, pin_mode=bcm, pin_rst=rst_pin)
        self.version = self.chip.Read_MFRC522(self.chip.VersionReg)
        if self.version in (0x00, 0xFF):
            log.error("MFRC522 answers version 0x%02X: check the SPI wiring", self.version)
        super().__init__(poll_s=poll_s, rearm_s=rearm_s, clock=clock, start=start)

    def _poll(self) -> str | None:
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
            uid += data
            self._halt()
            return bytes(uid).hex().upper()
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
        """HLTA: the card goes quiet until the next WUPA (it does not answer HLTA)."""
        chip = self.chip
        frame = [_HLTA, 0x00]
        chip.MFRC522_ToCard(chip.PCD_TRANSCEIVE, frame + chip.CalulateCRC(frame))

    def describe(self) -> str:
        return f"MFRC522 on SPI (chip version 0x{self.version:02X}, reset pin {self.rst_pin})"

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
