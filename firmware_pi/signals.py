"""What the controller wants to show people at the machine (LEDs now, a buzzer later)."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    """A machine-level indication; the hardware decides how each one looks."""

    IDLE = "idle"  # free: nobody is using the machine
    GRANTED = "granted"  # a session runs: the relay is on
    DENIED = "denied"  # a tap was refused (shown briefly, over the current state)
