"""The machine's parts through gpiozero: power relay, status LEDs, buzzer, busy input and
the "oops" button.

Small devices in gpiozero's style (keyword options, `pin_factory`, `close()`, context
managers), composed by MachineHardware. Tests pass `gpiozero.pins.mock.MockFactory()`.
Animations (LED blinking, buzzer patterns) run on gpiozero's background source
threads, so the main loop never waits for them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol, Self

from gpiozero import LED, Button, Buzzer, DigitalInputDevice, DigitalOutputDevice

from firmware_pi.signals import Signal

log = logging.getLogger(__name__)

PinSpec = int | str

# Animation frames: one value every FRAME_S seconds.
FRAME_S = 0.1
DENIED_FRAMES = (1, 0) * 4  # four quick red flashes (0.8 s)
ENROLLED_FRAMES = (1, 1, 0, 1, 1, 0)  # two green double-flashes
OFFLINE_FRAMES = (1,) + (0,) * 19  # a short red blip every 2 s
WARNING_FRAMES = (1, 0)  # green blinks fast
AWAITING_FRAMES = (1, 1, 1, 0, 0, 0)  # green blinks slowly
ENROLLING_GREEN = (1, 1, 0, 0)  # green and red take turns
ENROLLING_RED = (0, 0, 1, 1)

# Buzzer patterns (frames of FRAME_S), played once per signal: each is distinct in
# rhythm so people can tell them apart without looking.
BUZZER_PATTERNS: dict[Signal, tuple[int, ...]] = {
    Signal.GRANTED: (1,),  # one short beep
    Signal.DENIED: (1, 0, 1, 0, 1),  # three short beeps
    Signal.WARNING: (1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1),  # three long beeps
    Signal.OUT_OF_SERVICE: (1,) * 15,  # one long 1.5 s tone
    Signal.AWAITING_SUPERVISOR: (1, 0, 0, 0, 1),  # two spaced beeps
    Signal.ENROLLING: (1, 0, 1),  # two quick beeps
    Signal.ENROLLED: (1, 1, 0, 1),  # long-short
    Signal.OFFLINE: (1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1),  # three slow blips
}


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


def _set(device: Any, *, on: bool) -> None:
    device.source = None
    device.value = on


def _animate(device: Any, frames: Iterable[int]) -> None:
    device.source = frames


class StatusLeds(_ClosingContext):
    """A green and a red LED showing the machine's Signal, with an `offline` overlay.

    Green: steady while a session runs, fast blink on a warning, slow blink while a
    supervised member waits for a supervisor. Red: steady while out of service, flashes
    on a denial, blips slowly while the controller cannot reach the broker. Enrolling:
    the two take turns.
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
        self._signal = Signal.IDLE  # the last signal shown (transient ones included)
        self._base = Signal.IDLE  # the lasting state under transient signals
        self._offline = False
        self._red_shown = "off"

    @property
    def signal(self) -> Signal:
        """The last signal shown (DENIED stays reported here until the next signal)."""
        return self._signal

    @property
    def state(self) -> Signal:
        """The lasting state shown under any brief signal."""
        return self._base

    @property
    def offline(self) -> bool:
        return self._offline

    @offline.setter
    def offline(self, value: bool) -> None:
        if value != self._offline:
            self._offline = value
            self._show_red(flash=None)

    def show(self, signal: Signal) -> None:
        """Show a signal: a lasting state, or a brief one over the current state."""
        if signal is Signal.DENIED:
            self._show_red(flash=DENIED_FRAMES)
        elif signal is Signal.ENROLLED:
            _animate(self.green, itertools.chain(ENROLLED_FRAMES, self._green_rest()))
        elif signal is Signal.OFFLINE:
            pass  # the `offline` overlay shows it for as long as it lasts
        else:
            self._base = signal
            self._show_green()
            self._show_red(flash=None)
        self._signal = signal

    def _green_rest(self) -> Iterable[int]:
        base = self._base
        if base is Signal.GRANTED:
            return itertools.repeat(1)
        if base is Signal.WARNING:
            return itertools.cycle(WARNING_FRAMES)
        if base is Signal.AWAITING_SUPERVISOR:
            return itertools.cycle(AWAITING_FRAMES)
        if base is Signal.ENROLLING:
            return itertools.cycle(ENROLLING_GREEN)
        return itertools.repeat(0)

    def _show_green(self) -> None:
        base = self._base
        if base in (Signal.GRANTED, Signal.IDLE, Signal.OUT_OF_SERVICE):
            _set(self.green, on=base is Signal.GRANTED)
        else:
            _animate(self.green, self._green_rest())

    def _red_rest(self) -> Iterable[int] | None:
        """Red's lasting pattern, or None for steady off."""
        if self._base is Signal.OUT_OF_SERVICE:
            return itertools.repeat(1)
        if self._base is Signal.ENROLLING:
            return itertools.cycle(ENROLLING_RED)
        if self._offline:
            return itertools.cycle(OFFLINE_FRAMES)
        return None

    def _red_mode(self) -> str:
        if self._base in (Signal.OUT_OF_SERVICE, Signal.ENROLLING):
            return self._base.value
        return "offline" if self._offline else "off"

    def _show_red(self, *, flash: tuple[int, ...] | None) -> None:
        mode = self._red_mode()
        if flash is None and mode == self._red_shown:
            return  # already showing it: don't restart the animation thread
        self._red_shown = mode if flash is None else "flash"
        rest = self._red_rest()
        if flash is not None:
            _animate(self.red, itertools.chain(flash, rest if rest is not None else (0,)))
        elif rest is None:
            _set(self.red, on=False)
        elif self._base is Signal.OUT_OF_SERVICE:
            _set(self.red, on=True)
        else:
            _animate(self.red, rest)

    def close(self) -> None:
        for led in (self.green, self.red):
            led.close()


class SignalBuzzer(_ClosingContext):
    """An active buzzer that plays one distinct pattern per Signal (BUZZER_PATTERNS)."""

    def __init__(self, pin: PinSpec, *, frame_s: float = FRAME_S, pin_factory: Any = None) -> None:
        self.device = Buzzer(pin, pin_factory=pin_factory)
        self.device.source_delay = frame_s
        self.played: list[Signal] = []  # the last few signals sounded (for `check`/tests)

    def play(self, signal: Signal) -> None:
        """Sound `signal`'s pattern once (replacing one still playing); silent if none."""
        frames = BUZZER_PATTERNS.get(signal)
        if frames is None:
            return
        self.played = [*self.played[-19:], signal]
        _animate(self.device, itertools.chain(frames, (0,)))

    def close(self) -> None:
        self.device.close()


class AnalogInput(Protocol):
    """What BusySensor needs from an ADC channel (gpiozero's MCP3008 is one)."""

    @property
    def value(self) -> float: ...

    def close(self) -> None: ...


class BusySensor(_ClosingContext):
    """Whether the tool is working: a digital current-sense switch, or an ADC threshold.

    Digital: `pin` with the sensor's output; `active_high` is the sensor's polarity
    (False: the pin goes low while the tool works). `pull_up`: the internal pull
    resistor; None (default) pulls toward the sensor's idle level (down for an
    active-high sensor, up for an active-low one), so an unplugged sensor reads idle.
    Analog: `mcp3008_channel` (0-7) and `threshold` (0..1 of full scale); the reading
    must cross `threshold ± hysteresis` to change state, so a current hovering at the
    threshold does not flap. `adc` injects any object with a `value` (tests, other ADCs).
    """

    def __init__(
        self,
        *,
        pin: PinSpec | None = None,
        pull_up: bool | None = None,
        active_high: bool = True,
        bounce_time: float | None = 0.05,
        mcp3008_channel: int | None = None,
        threshold: float = 0.2,
        hysteresis: float = 0.02,
        adc: AnalogInput | None = None,
        pin_factory: Any = None,
    ) -> None:
        self._digital: DigitalInputDevice | None = None
        self._adc: AnalogInput | None = adc
        self.threshold = threshold
        self.hysteresis = hysteresis
        self._analog_state = False
        self._inverted = False
        if adc is None and mcp3008_channel is not None:
            from gpiozero import MCP3008  # only when an ADC is configured

            self._adc = MCP3008(channel=mcp3008_channel, pin_factory=pin_factory)
        if self._adc is None:
            if pin is None:
                raise ValueError("BusySensor needs a pin or an MCP3008 channel")
            pull = (not active_high) if pull_up is None else pull_up
            self._digital = DigitalInputDevice(
                pin, pull_up=pull, bounce_time=bounce_time, pin_factory=pin_factory
            )
            # With a pull resistor gpiozero takes the pulled level as inactive; the
            # sensor's own polarity decides, so invert when the two disagree.
            self._inverted = pull == active_high

    @property
    def kind(self) -> str:
        return "digital" if self._digital is not None else "analog"

    @property
    def reading(self) -> float:
        """The raw reading: 0/1 for the digital input, 0..1 for the ADC."""
        if self._digital is not None:
            return float(self._digital.value)
        assert self._adc is not None
        return float(self._adc.value)

    @property
    def is_busy(self) -> bool:
        if self._digital is not None:
            return bool(self._digital.is_active) != self._inverted
        value = self.reading
        if self._analog_state:
            self._analog_state = value > self.threshold - self.hysteresis
        else:
            self._analog_state = value >= self.threshold + self.hysteresis
        return self._analog_state

    def close(self) -> None:
        if self._digital is not None:
            self._digital.close()
        if self._adc is not None:
            self._adc.close()


class OopsButton(_ClosingContext):
    """The "oops" (report a problem) push button; presses are counted until taken."""

    def __init__(
        self,
        pin: PinSpec,
        *,
        pull_up: bool = True,
        bounce_time: float | None = 0.05,
        pin_factory: Any = None,
    ) -> None:
        self.button = Button(pin, pull_up=pull_up, bounce_time=bounce_time,
                             pin_factory=pin_factory)
        self._lock = threading.Lock()
        self._presses = 0
        self.button.when_pressed = self._pressed

    def _pressed(self) -> None:  # gpiozero's callback thread
        with self._lock:
            self._presses += 1

    def take_presses(self) -> int:
        """How many presses since the last call (0 if none)."""
        with self._lock:
            presses, self._presses = self._presses, 0
        return presses

    def close(self) -> None:
        self.button.close()


class MachineHardware(_ClosingContext):
    """Everything the controller drives on one machine; the relay is built (off) first.

    Buzzer, busy sensor and oops button are optional (None pins leave them out).
    """

    def __init__(
        self,
        *,
        relay_pin: PinSpec = 17,
        relay_active_high: bool = True,
        green_led_pin: PinSpec = 27,
        red_led_pin: PinSpec = 22,
        buzzer_pin: PinSpec | None = None,
        busy_pin: PinSpec | None = None,
        busy_active_high: bool = True,
        busy_mcp3008_channel: int | None = None,
        busy_threshold: float = 0.2,
        oops_pin: PinSpec | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.relay = Relay(relay_pin, active_high=relay_active_high, pin_factory=pin_factory)
        self.buzzer: SignalBuzzer | None = None
        self.busy: BusySensor | None = None
        self.oops: OopsButton | None = None
        self.leds: StatusLeds
        parts: list[_ClosingContext] = []
        try:
            self.leds = StatusLeds(
                green_pin=green_led_pin, red_pin=red_led_pin, pin_factory=pin_factory
            )
            parts.append(self.leds)
            if buzzer_pin is not None:
                self.buzzer = SignalBuzzer(buzzer_pin, pin_factory=pin_factory)
                parts.append(self.buzzer)
            if busy_pin is not None or busy_mcp3008_channel is not None:
                self.busy = BusySensor(
                    pin=busy_pin,
                    active_high=busy_active_high,
                    mcp3008_channel=busy_mcp3008_channel,
                    threshold=busy_threshold,
                    pin_factory=pin_factory,
                )
                parts.append(self.busy)
            if oops_pin is not None:
                self.oops = OopsButton(oops_pin, pin_factory=pin_factory)
                parts.append(self.oops)
        except BaseException:
            self.relay.close()
            for part in parts:
                part.close()
            raise

    def show(self, signal: Signal) -> None:
        """LEDs and buzzer together."""
        self.leds.show(signal)
        if self.buzzer is not None:
            self.buzzer.play(signal)

    def close(self) -> None:
        """Relay off (and released) first, whatever happens to the rest."""
        try:
            self.relay.close()
        finally:
            for part in (self.leds, self.buzzer, self.busy, self.oops):
                if part is None:
                    continue
                try:
                    part.close()
                except Exception:
                    log.exception("error closing %r", part)
