"""Relay and LEDs through gpiozero's MockFactory pins."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import wait_until

from firmware_pi.hardware import MachineHardware, Relay, StatusLeds
from firmware_pi.signals import Signal


def test_relay_is_off_at_construction(pin_factory: MockFactory) -> None:
    with Relay(17, pin_factory=pin_factory) as relay:
        assert not relay.is_active
        assert pin_factory.pin(17).state is False


def test_relay_drives_pin_high_when_on(pin_factory: MockFactory) -> None:
    with Relay(17, pin_factory=pin_factory) as relay:
        relay.on()

        assert relay.is_active
        assert pin_factory.pin(17).state is True


def test_relay_active_low_holds_pin_high_when_off(pin_factory: MockFactory) -> None:
    with Relay(17, active_high=False, pin_factory=pin_factory) as relay:
        assert not relay.is_active
        assert pin_factory.pin(17).state is True


def test_relay_active_low_pulls_pin_low_when_on(pin_factory: MockFactory) -> None:
    with Relay(17, active_high=False, pin_factory=pin_factory) as relay:
        relay.on()

        assert pin_factory.pin(17).state is False


def test_relay_close_switches_off(pin_factory: MockFactory) -> None:
    relay = Relay(17, pin_factory=pin_factory)
    relay.on()

    relay.close()

    assert pin_factory.pin(17).state is False
    assert relay.closed


def test_relay_has_no_blink() -> None:
    assert not hasattr(Relay, "blink")


@pytest.fixture
def leds(pin_factory: MockFactory) -> Iterator[StatusLeds]:
    with StatusLeds(green_pin=27, red_pin=22, pin_factory=pin_factory) as leds:
        yield leds


def test_status_leds_are_off_when_idle(leds: StatusLeds, pin_factory: MockFactory) -> None:
    leds.show(Signal.IDLE)

    assert (pin_factory.pin(27).state, pin_factory.pin(22).state) == (False, False)


def test_status_leds_show_green_when_granted(leds: StatusLeds, pin_factory: MockFactory) -> None:
    leds.show(Signal.GRANTED)

    assert (pin_factory.pin(27).state, pin_factory.pin(22).state) == (True, False)


def test_status_leds_flash_red_then_stop_when_denied(pin_factory: MockFactory) -> None:
    red = pin_factory.pin(22)
    with StatusLeds(green_pin=27, red_pin=22, frame_s=0.005, pin_factory=pin_factory) as leds:
        leds.show(Signal.DENIED)

        wait_until(lambda: red.state is True, timeout=1)
        time.sleep(0.2)  # the flashes take 8 frames
        assert red.state is False
    assert pin_factory.pin(27).state is False


def test_status_leds_keep_green_during_denial_while_granted(
    leds: StatusLeds, pin_factory: MockFactory
) -> None:
    leds.show(Signal.GRANTED)

    leds.show(Signal.DENIED)

    wait_until(lambda: pin_factory.pin(22).state is True, timeout=1)
    assert pin_factory.pin(27).state is True


def test_status_leds_blip_red_while_offline(leds: StatusLeds, pin_factory: MockFactory) -> None:
    leds.offline = True

    wait_until(lambda: pin_factory.pin(22).state is True, timeout=1)
    wait_until(lambda: pin_factory.pin(22).state is False, timeout=1)


def test_status_leds_clear_red_back_online(leds: StatusLeds, pin_factory: MockFactory) -> None:
    leds.offline = True

    leds.offline = False

    assert pin_factory.pin(22).state is False
    assert leds.red.source is None


def test_machine_hardware_uses_configured_pins(pin_factory: MockFactory) -> None:
    with MachineHardware(
        relay_pin=5, green_led_pin=6, red_led_pin=13, pin_factory=pin_factory
    ) as hardware:
        hardware.relay.on()
        hardware.leds.show(Signal.GRANTED)

        assert pin_factory.pin(5).state is True
        assert pin_factory.pin(6).state is True


def test_machine_hardware_close_switches_relay_off(pin_factory: MockFactory) -> None:
    hardware = MachineHardware(pin_factory=pin_factory)
    hardware.relay.on()

    hardware.close()

    assert pin_factory.pin(17).state is False
    assert hardware.relay.closed


def test_machine_hardware_releases_relay_when_leds_fail(pin_factory: MockFactory) -> None:
    with pytest.raises(Exception, match="pin"):
        # The red LED wants the relay's pin: construction fails after the relay exists.
        MachineHardware(relay_pin=17, red_led_pin=17, pin_factory=pin_factory)

    Relay(17, pin_factory=pin_factory).close()  # the pin was released
