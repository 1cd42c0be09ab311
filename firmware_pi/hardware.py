"""The machine's outputs through gpiozero: the power relay and the two status LEDs.

Small devices in gpiozero's style (keyword options, `pin_factory`, `close()`, context
managers), composed by MachineHardware. Tests pass `gpiozero.pins.mock.MockFactory()`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from gpiozero import LED, DigitalOutputDevice

from firmware_pi.signals import Signal

log = logging.getLogger(__name__)

PinSpec = int | str

# LED animation frames: one value every FRAME_S seconds.
FRAME_S = 0.1
DENIED_FRAMES = (1, 0) * 4  # four quick red flashes (0.8 s)
OFFLINE_FRAMES = (1,) + (0,) * 19  # a short red blip every 2 s


class _ClosingContext:
    """`with device:` closes the device on exit, like gpiozero's devices."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Relay(_ClosingContext):
    """The tool's power relay: off at construction, only ever fully on or off.

    Wraps (rather than subclasses) DigitalOutputDevice so that nothing can make the
    relay blink or take a `source`: a power relay has exactly two commands.
    """

    def __init__(
        self, pin: PinSpec, *, active_high: bool = True, pin_factory: Any = None
    ) -> None:
        self._device = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )

    @property
    def pin(self) -> Any:
        return self._device.pin

    @property
    def is_active(self) -> bool:
        """True while the relay powers the tool."""
        return bool(self._device.is_active)

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    @property
    def closed(self) -> bool:
        return bool(self._device.closed)

    def close(self) -> None:
        """Switch off, then release the pin."""
        if not self._device.closed:
            self._device.off()
        self._device.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("on" if self.is_active else "off")
        return f"<Relay {self._device.pin} {state}>"


class StatusLeds(_ClosingContext):
    """A green and a red LED showing the machine's Signal, with an `offline` overlay.

    Green is steady while a session runs. Red flashes on a denial and blips slowly
    while the controller cannot reach the broker. Animations run on gpiozero's
    background source threads, so callers never block.
    """

    def __init__(
        self,
        *,
        green_pin: PinSpec,
        red_pin: PinSpec,
        frame_s: float = FRAME_S,
        pin_factory: Any = None,
    ) -> None:
        self.green = LED(green_pin, pin_factory=pin_factory)
        try:
            self.red = LED(red_pin, pin_factory=pin_factory)
        except BaseException:
            self.green.close()
            raise
        for led in (self.green, self.red):
            led.source_delay = frame_s
        self._signal = Signal.IDLE
        self._offline = False

    @property
    def signal(self) -> Signal:
        """The state shown (DENIED stays shown here until the next signal)."""
        return self._signal

    @property
    def offline(self) -> bool:
        return self._offline

    @offline.setter
    def offline(self, value: bool) -> None:
        if value != self._offline:
            self._offline = value
            self._show_red(flash=False)

    def show(self, signal: Signal) -> None:
        """Show a signal; DENIED flashes red over the current green state."""
        if signal is Signal.DENIED:
            self._show_red(flash=True)
        else:
            self._set(self.green, on=signal is Signal.GRANTED)
            if self._signal is Signal.DENIED:
                self._show_red(flash=False)
        self._signal = signal

    def _show_red(self, *, flash: bool) -> None:
        rest: Iterable[int] = itertools.cycle(OFFLINE_FRAMES) if self._offline else (0,)
        if flash:
            self._animate(self.red, itertools.chain(DENIED_FRAMES, rest))
        elif self._offline:
            self._animate(self.red, rest)
        else:
            self._set(self.red, on=False)

    @staticmethod
    def _set(led: LED, *, on: bool) -> None:
        led.source = None
        led.value = on

    @staticmethod
    def _animate(led: LED, frames: Iterable[int]) -> None:
        led.source = frames

    def close(self) -> None:
        for led in (self.green, self.red):
            led.close()


class MachineHardware(_ClosingContext):
    """Everything the controller drives on one machine; the relay is built (off) first."""

    def __init__(
        self,
        *,
        relay_pin: PinSpec = 17,
        relay_active_high: bool = True,
        green_led_pin: PinSpec = 27,
        red_led_pin: PinSpec = 22,
        pin_factory: Any = None,
    ) -> None:
        self.relay = Relay(relay_pin, active_high=relay_active_high, pin_factory=pin_factory)
        try:
            self.leds = StatusLeds(
                green_pin=green_led_pin, red_pin=red_led_pin, pin_factory=pin_factory
            )
        except BaseException:
            self.relay.close()
            raise

    def close(self) -> None:
        """Relay off (and released) first, whatever happens to the rest."""
        try:
            self.relay.close()
        finally:
            self.leds.close()
