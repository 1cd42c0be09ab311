"""Background work of the server process that runs on a timer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

logger = logging.getLogger(__name__)


# Given a worker's name, holds a lock shared by every server process while the
# block runs; yields False when another process holds it (the run is skipped).
ExclusiveRun = Callable[[str], AbstractContextManager[bool]]


def _always(_name: str) -> AbstractContextManager[bool]:
    return nullcontext(True)


class PeriodicWorker:
    """Calls `run_once()` on its own thread, first after `first_delay_s`, then every
    `period_s`; a failed run is logged and the next one tries again. `stop()` returns
    once the thread has ended (a run under way is finished first).

    Each timed run happens inside `exclusive(name)`: with several server processes on
    one database, a run is skipped while another process runs the same worker.
    """

    name = "periodic"

    def __init__(
        self, *, period_s: float, first_delay_s: float, exclusive: ExclusiveRun | None = None
    ) -> None:
        self.period_s = period_s
        self.first_delay_s = first_delay_s
        self.exclusive: ExclusiveRun = exclusive or _always
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        delay = self.first_delay_s
        while not self._stop.wait(delay):
            try:
                self._run_exclusively()
            except Exception:
                # The database or the broker may be down: the next run tries again.
                logger.exception("%s: run failed", self.name)
            delay = self.period_s

    def _run_exclusively(self) -> None:
        with self.exclusive(self.name) as acquired:
            if acquired:
                self.run_once()
                return
        self.skipped += 1
        logger.debug("%s: another server process is running it; skipped", self.name)
