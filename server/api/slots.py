"""A bound on the requests that hold a database session at once."""

from __future__ import annotations

import anyio
from anyio.lowlevel import RunVar


class RequestSlots:
    """At most `size` requests hold a session at once; the others wait in the event
    loop, holding neither a worker thread nor a connection.

    With `size` below the connection pool's capacity, a request that holds a session
    (and so, maybe, a connection) while it waits for a worker thread never waits on a
    thread that waits for a connection: the two pools cannot deadlock. One semaphore
    per event loop (a test may serve the same runtime from several loops).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore: RunVar[anyio.Semaphore] = RunVar(f"fablab_request_slots_{id(self)}")

    def semaphore(self) -> anyio.Semaphore:
        """This event loop's semaphore."""
        try:
            return self._semaphore.get()
        except LookupError:
            semaphore = anyio.Semaphore(self.size)
            self._semaphore.set(semaphore)
            return semaphore
