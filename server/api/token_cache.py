"""Bearer tokens checked recently, so that a client polling the API is not looked up in
the database on every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from server.domain.access import Principal

MAX_ENTRIES = 10_000


class TokenCache:
    """Principals of valid tokens (by token hash), each kept `ttl_s` seconds.

    Emptied whenever the message bus has handled a command from a person (a revoked
    token, a member deactivated, a role or training changed), so such a change made in
    this process applies to the next request; a change made by another process applies
    within `ttl_s`. Controller facts (commands built from an MQTT message: events,
    statuses, online checks) do not empty it: they change no role or token, and a
    trainer's training kept alive by a session reaches the cache within `ttl_s` too
    (emptying it on every event would make every polling client look its token up again
    several times a second). A lookup that started before a change is not kept
    (`generation`). Only valid tokens are kept: an unknown or revoked one is looked up
    every time.
    """

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, key: str) -> Principal | None:
        with self._lock:
            found = self._entries.get(key)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def put(self, key: str, principal: Principal, generation: int) -> None:
        """Keep the principal unless the cache was emptied since `generation` was read."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (principal, self._clock() + self.ttl_s)

    def after_command(self, cmd: object) -> None:
        """A bus listener: forget every token unless `cmd` is a controller's fact."""
        if not hasattr(cmd, "topic"):
            self.clear()

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
