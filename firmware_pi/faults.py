"""The codes of the controller's `fault` events (docs/protocol.md, `fault`).

A fault is reported once when the condition begins (not at every loop iteration);
the message says what happened in words a manager can act on.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

MAX_MESSAGE_CHARS = 500  # the protocol's limit on an event's text fields


class FaultCode(StrEnum):
    """What went wrong on the controller."""

    READER_FAILURE = "reader_failure"  # the badge reader keeps failing, or raised
    OUTBOX_FULL = "outbox_full"  # the outbox reached its bound: some events not recorded
    OUTBOX_CORRUPT = "outbox_corrupt"  # the outbox file was corrupt at start: moved aside
    SNAPSHOT_CORRUPT = "snapshot_corrupt"  # the stored snapshot was unreadable or forged
    WATCHDOG_NEAR_MISS = "watchdog_near_miss"  # the main loop stalled past half the watchdog
    OUTBOX_STREAM_RESTARTED = "outbox_stream_restarted"  # events moved to a new outbox stream


def fault_data(code: FaultCode, message: str) -> dict[str, str]:
    """The `fault` event's data, the message cut to the protocol's limit."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return {"code": code.value, "message": message}


def aside_path(path: Path) -> Path:
    """A free name next to `path` to move a corrupt file to: `<name>.corrupt-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target
