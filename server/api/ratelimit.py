"""A small in-process limiter for login attempts (per client address and per email)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class LoginRateLimiter:
    """At most `max_failures` failed logins per key within `window_s` seconds.

    In-process: a scaled-out deployment should put the same rule at its reverse proxy.
    """

    def __init__(self, *, max_failures: int = 5, window_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, *keys: str, now: float | None = None) -> int:
        """Seconds to wait before another attempt (0 = allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._failures[key]
                while failures and failures[0] <= now - self.window_s:
                    failures.popleft()
                if len(failures) >= self.max_failures:
                    wait = max(wait, failures[0] + self.window_s - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                self._failures[key].append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
