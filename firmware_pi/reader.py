"""Badge readers behind one small interface; the simulated one feeds tests and the demo."""

from __future__ import annotations

import abc
import queue
from types import TracebackType
from typing import Self

from protocol import normalize_uid


class CardReader(abc.ABC):
    """Something that reports badge taps as normalized UIDs (uppercase hex)."""

    @abc.abstractmethod
    def read(self, timeout: float) -> str | None:
        """Wait up to `timeout` seconds for a tap; its normalized UID, or None."""

    def close(self) -> None:  # noqa: B027 - readers without resources need no close
        """Release the reader's device."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SimulatedReader(CardReader):
    """A reader whose taps come from `tap()`, callable from any thread."""

    def __init__(self) -> None:
        self._taps: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._closed = False

    def tap(self, uid: str) -> None:
        """Present a badge; raises ProtocolError at once if the UID is not hexadecimal."""
        self._taps.put(normalize_uid(uid))

    def read(self, timeout: float) -> str | None:
        if self._closed:
            return None
        try:
            return self._taps.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._closed = True
