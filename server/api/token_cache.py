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

    Emptied whenever the message bus has handled a command (a revoked token, a member
    deactivated, a role or training changed), so a change made in this process applies
    to the next request; a change made by another process applies within `ttl_s`. A
    lookup that started before such a change is not kept (`generation`). Only valid
    tokens are kept: an unknown or revoked one is looked up every time.
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

    def clear(self, _cmd: object = None) -> None:
        """Forget every token (a bus listener)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
