"""One controller as a separate process, driven line by line from the fault harness.

    python -m tests.faults.controller_proc CONFIG.toml

It is the real firmware (``firmware_pi.bootstrap.build_controller``, the same wiring as
``fablab-pi simulate``) on gpiozero's MockFactory pins, with a SimulatedReader and a
ManualBusy input, and a wall clock whose offset the harness can move (an NTP step, a
Pi booting without RTC): monotonic time is untouched, as on a real system.

Commands on stdin, one a line; each is answered by one JSON line on stdout:

- ``tap UID``          present a badge
- ``busy on|off``      the current sensor
- ``clock SECONDS``    set the wall clock offset (seconds, may be negative)
- ``status``           relay, session, outbox, snapshot, link
- ``quit``             stop cleanly (relay off)

Logs go to stderr as JSON lines (the firmware's own formatter). Every relay change is
logged as ``{"relay": true|false, "wall": …, "session_id": …, "member_id": …,
"grant_ok": …}``, where ``grant_ok`` says whether, at that moment, the snapshot the
controller holds lists the session's badge for that member, unexpired, on a machine in
service: the harness checks that the relay never went on without it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from firmware_pi.app import ControllerApp, ManualBusy
from firmware_pi.bootstrap import build_controller
from firmware_pi.clock import Instant
from firmware_pi.config import ControllerConfig
from firmware_pi.logs import setup_logging
from firmware_pi.reader import SimulatedReader
from protocol import badge_digest

logger = logging.getLogger("faults.controller")


class OffsetClock:
    """The system clocks, with a wall offset the harness can step at any time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> Instant:
        return Instant(wall=time.time() + self.offset, mono=time.monotonic())


def _grant_ok(app: ControllerApp[SimulatedReader], wall: float) -> bool:
    controller = app.controller
    session, snapshot = controller.session, controller.snapshot
    if session is None or snapshot is None:
        return False
    if session.maintenance_override:
        return True
    if snapshot.settings.out_of_service or controller.out_of_service:
        return False
    entry = snapshot.lookup(badge_digest(app.config.key, session.badge_uid))
    return (
        entry is not None
        and entry.member_id == session.member_id
        and (entry.expires_at is None or wall < entry.expires_at)
    )


def watch_relay(app: ControllerApp[SimulatedReader], clock: OffsetClock) -> None:
    """Log every change of the relay (the calls come from the main loop thread)."""
    relay = app.hardware.relay
    on, off = relay.on, relay.off
    state = {"on": relay.is_active}

    def changed(now_on: bool) -> None:
        if now_on == state["on"]:
            return
        state["on"] = now_on
        session = app.controller.session
        real_wall = time.time()
        logger.info(
            "relay %s", "on" if now_on else "off",
            extra={
                "relay": now_on,
                "wall": real_wall,
                "controller_wall": real_wall + clock.offset,
                "session_id": session.session_id if session else None,
                "member_id": session.member_id if session else None,
                "grant_ok": _grant_ok(app, real_wall + clock.offset) if now_on else None,
            },
        )

    def relay_on() -> None:
        on()
        changed(True)

    def relay_off() -> None:
        off()
        changed(False)

    relay.on = relay_on  # type: ignore[method-assign]
    relay.off = relay_off  # type: ignore[method-assign]
    logger.info("relay off", extra={"relay": False, "wall": time.time(), "initial": True})


def status(app: ControllerApp[SimulatedReader]) -> dict[str, Any]:
    controller = app.controller
    session = controller.session
    snapshot = controller.snapshot
    return {
        "relay": app.hardware.relay.is_active,
        "session_id": session.session_id if session else None,
        "member_id": session.member_id if session else None,
        "snapshot_version": snapshot.version if snapshot else None,
        "permissions": len(snapshot.permissions) if snapshot else 0,
        "connected": app.connected,
        "outbox_id": app.outbox.outbox_id,
        "pending": len(app.outbox),
        "last_seq": app.outbox.last_seq,
        "running": app.running,
        "iterations": app.iterations,
    }


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def serve(app: ControllerApp[SimulatedReader], busy: ManualBusy, clock: OffsetClock) -> None:
    lock = threading.Lock()  # status() reads the outbox: one command at a time
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        with lock:
            wall = time.time()
            if command == "tap":
                app.reader.tap(args[0])
                _answer({"ok": "tap", "wall": wall})
            elif command == "busy":
                busy.is_busy = args[0] == "on"
                _answer({"ok": "busy", "wall": wall, "busy": busy.is_busy})
            elif command == "clock":
                clock.offset = float(args[0])
                _answer({"ok": "clock", "wall": wall, "offset": clock.offset})
            elif command == "status":
                _answer({"ok": "status", "wall": wall, **status(app)})
            elif command == "quit":
                break
            else:
                _answer({"error": f"unknown command {line.strip()!r}"})
    app.stop()
    _answer({"ok": "stopped", "wall": time.time()})


def main(argv: list[str]) -> int:
    setup_logging("INFO", "json")
    config = ControllerConfig.load(Path(argv[0]))
    clock = OffsetClock()
    busy = ManualBusy()
    app = build_controller(
        config,
        pin_factory=MockFactory(),
        reader=SimulatedReader(),
        busy_input=busy,
        clock=clock,
    )
    watch_relay(app, clock)
    app.start()
    _answer({"ok": "started", "wall": time.time(), "pid_outbox": app.outbox.outbox_id})
    serve(app, busy, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
