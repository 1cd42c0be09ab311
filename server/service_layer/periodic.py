"""Background work of the server process that runs on a timer."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class PeriodicWorker:
    """Calls `run_once()` on its own thread, first after `first_delay_s`, then every
    `period_s`; a failed run is logged and the next one tries again. `stop()` returns
    once the thread has ended (a run under way is finished first)."""

    name = "periodic"

    def __init__(self, *, period_s: float, first_delay_s: float) -> None:
        self.period_s = period_s
        self.first_delay_s = first_delay_s
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
                self.run_once()
            except Exception:
                # The database or the broker may be down: the next run tries again.
                logger.exception("%s: run failed", self.name)
            delay = self.period_s
