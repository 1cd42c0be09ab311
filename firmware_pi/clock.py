"""Time as the controller sees it: a wall clock and a monotonic clock read together."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Instant:
    """One moment: `wall` is epoch seconds (may jump: the Pi has no RTC), `mono` never does."""

    wall: float
    mono: float


class Clock(Protocol):
    """Anything that can tell the current Instant."""

    def now(self) -> Instant: ...


class SystemClock:
    """The process clocks: time.time() and time.monotonic()."""

    def now(self) -> Instant:
        return Instant(wall=time.time(), mono=time.monotonic())
