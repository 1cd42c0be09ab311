"""What the controller wants to show people at the machine (LEDs and buzzer)."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    """A machine-level indication; the hardware decides how each one looks and sounds."""

    IDLE = "idle"  # free: nobody is using the machine
    GRANTED = "granted"  # a session runs: the relay is on
    DENIED = "denied"  # a tap was refused (shown briefly, over the current state)
    WARNING = "warning"  # the session will end soon (idle timeout / max duration)
    OUT_OF_SERVICE = "out_of_service"  # reported broken or taken out of service
    AWAITING_SUPERVISOR = "awaiting_supervisor"  # supervised member: waiting for 2nd badge
    ENROLLING = "enrolling"  # the next badge is read for enrolment, not decided
    ENROLLED = "enrolled"  # a badge was read for enrolment (brief, like DENIED)
    OFFLINE = "offline"  # the broker was lost (sounded once; the LEDs show it while it lasts)


# Shown briefly over the current state rather than replacing it.
TRANSIENT = frozenset({Signal.DENIED, Signal.ENROLLED, Signal.OFFLINE})
