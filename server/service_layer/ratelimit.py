"""A small in-process limiter of failed attempts (logins, password checks, email changes)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from server.domain.errors import TooManyAttemptsError

DEFAULT_MAX_KEYS = 10_000


class AttemptLimiter:
    """At most `max_failures` failures per key within `window_s` seconds.

    Memory is bounded: at most `max_keys` keys are remembered, the least recently failed
    one is forgotten first. In-process: a scaled-out deployment should put the same rule
    at its reverse proxy.
    """

    def __init__(
        self, *, max_failures: int = 5, window_s: float = 300.0, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, *keys: str, now: float | None = None) -> int:
        """Seconds to wait before another attempt (0 = allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if failures is None:
                    continue
                while failures and failures[0] <= now - self.window_s:
                    failures.popleft()
                if not failures:
                    del self._failures[key]
                elif len(failures) >= self.max_failures:
                    wait = max(wait, failures[0] + self.window_s - now)
        return int(wait) + 1 if wait > 0 else 0

    def check(self, *keys: str, what: str = "attempts") -> None:
        """Raise TooManyAttemptsError while any of the keys is held back."""
        wait = self.retry_after(*keys)
        if wait:
            raise TooManyAttemptsError(f"too many {what}: try again in {wait} s", wait)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                failures = self._failures.setdefault(key, deque(maxlen=self.max_failures))
                failures.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
