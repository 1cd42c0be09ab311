"""The durable outbox: every event is committed to SQLite before anything else happens.

Events leave only when the server's cumulative ack covers their seq. The seq counter
lives in the same database and moves in the same transaction as the insert, so seqs
survive restarts, never repeat and never skip. `outbox_id` is random per database:
if the file is ever lost, the new outbox starts a new stream the server can tell
apart from the old one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from protocol import Event, EventKind, validate_event_data

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    controller_id TEXT NOT NULL,
    boot_id       TEXT NOT NULL,
    wall_time     REAL NOT NULL,
    mono_time     REAL NOT NULL,
    kind          TEXT NOT NULL,
    data          TEXT NOT NULL
);
"""


class OutboxClosedError(RuntimeError):
    """The outbox was used after close()."""


class Outbox:
    """Events of one controller waiting for the server's ack, in seq order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # One connection shared by the main loop and readers such as len(); the lock
        # serialises them, so sqlite's own same-thread check is not needed.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event is on disk before append() returns, power cut or not.
        self._db.execute("PRAGMA synchronous=FULL")
        self._create_schema()
        self.outbox_id: str = self._meta("outbox_id")
        self._last_seq = int(self._meta("last_seq"))

    def _create_schema(self) -> None:
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('outbox_id', ?)",
                (uuid.uuid4().hex,),
            )
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', '0')")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise OutboxClosedError(f"outbox {self.path} is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise OutboxClosedError(f"outbox {self.path} is closed")
            yield self._db

    def _meta(self, key: str) -> str:
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    @property
    def last_seq(self) -> int:
        """The seq of the most recent append (0 before the first)."""
        return self._last_seq

    def append(
        self,
        kind: EventKind,
        data: dict[str, Any],
        *,
        wall_time: float,
        mono_time: float,
        boot_id: str,
        controller_id: str,
    ) -> Event:
        """Commit a new event with the next seq and a fresh event id; returns it.

        `data` is checked against the protocol first, so nothing malformed is stored.
        """
        clean = validate_event_data(kind, data)
        event_id = str(uuid.uuid4())
        with self._transaction() as db:
            (last,) = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            seq = int(last) + 1
            db.execute(
                "INSERT INTO events"
                " (seq, event_id, controller_id, boot_id, wall_time, mono_time, kind, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, controller_id, boot_id, wall_time, mono_time, kind.value,
                 json.dumps(clean)),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(seq),))
        self._last_seq = seq
        return Event(
            event_id=event_id,
            controller_id=controller_id,
            outbox_id=self.outbox_id,
            seq=seq,
            boot_id=boot_id,
            wall_time=wall_time,
            mono_time=mono_time,
            kind=kind,
            data=clean,
        )

    def pending(self, limit: int = 100, *, after_seq: int = 0) -> list[Event]:
        """Unacked events with seq > `after_seq`, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT seq, event_id, controller_id, boot_id, wall_time, mono_time, kind, data"
                " FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [self._event(row) for row in rows]

    def _event(self, row: tuple[Any, ...]) -> Event:
        seq, event_id, controller_id, boot_id, wall_time, mono_time, kind, data = row
        return Event(
            event_id=event_id,
            controller_id=controller_id,
            outbox_id=self.outbox_id,
            seq=seq,
            boot_id=boot_id,
            wall_time=wall_time,
            mono_time=mono_time,
            kind=EventKind(kind),
            data=json.loads(data),
        )

    def ack(self, up_to_seq: int, *, outbox_id: str | None = None) -> int:
        """Forget every event with seq <= `up_to_seq`; returns how many were removed.

        An ack naming another outbox (a previous database of this controller) or a seq
        this outbox never issued is ignored: it cannot be about these events.
        """
        if outbox_id is not None and outbox_id != self.outbox_id:
            log.info("ignoring ack for outbox %s (this is %s)", outbox_id, self.outbox_id)
            return 0
        with self._transaction() as db:
            (last,) = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            if up_to_seq > int(last):
                log.warning("ignoring ack up to seq %d: last issued seq is %s", up_to_seq, last)
                return 0
            cursor = db.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))
        return cursor.rowcount

    def __len__(self) -> int:
        with self._reading() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
