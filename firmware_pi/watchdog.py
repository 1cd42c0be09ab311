"""systemd notifications (sd_notify) over $NOTIFY_SOCKET: READY, WATCHDOG, STOPPING.

The protocol is one datagram of `KEY=value` lines to a unix socket whose path systemd
puts in NOTIFY_SOCKET (a leading '@' means Linux's abstract namespace). With
`WatchdogSec=` in the unit, systemd sets WATCHDOG_USEC and kills and restarts the
service when no WATCHDOG=1 arrives within it; the unit's ExecStopPost then drives the
relay off. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; pings the watchdog at most every half period."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000
        self._socket: socket.socket | None = None
        self._last_ping = float("-inf")
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one message; False (logged once in a while) if it could not be sent."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
            self._socket.sendto(message.encode(), address)
        except OSError as exc:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 1000 == 0:
                log.error("sd_notify to %s failed: %s", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "running") -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def ping(self, mono: float) -> None:
        """WATCHDOG=1 when half the watchdog period (or 1 s without one) has passed."""
        period = self.watchdog_s / 2 if self.watchdog_s else 1.0
        if mono - self._last_ping >= period:
            self._last_ping = mono
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
