"""The durable outbox: every event is committed to SQLite before anything else happens.

Events leave only when the server's cumulative ack covers their seq. The seq counter
lives in the same database and moves in the same transaction as the insert, so seqs
survive restarts, never repeat and never skip. `outbox_id` is random per database:
if the file is ever lost, the new outbox starts a new stream the server can tell
apart from the old one.

The same database keeps what the controller must remember across a crash or power
cut, each in the transaction of the event that changes it:
- the open session (written with session_started and each heartbeat, removed with
  session_ended), so the next boot can close it at its last heartbeat;
- the machine's local out-of-service state (oops button, server command);
- the ids of the signed commands already applied, so a replay is ignored.

Several writes that belong together (a command's id, the local state it leaves and
its command_applied event; an oops report and the session it ends) are made in one
transaction with `atomic()`: after a crash either all of them are on disk or none.

Published rows are never changed: the app marks events as published (before it hands
them to the broker), and only a never-published row may be rewritten.

Bounded: past `warn_ratio` of `max_events` pending events it logs a warning and a new
heartbeat of a session *replaces* that session's latest pending heartbeat in place
(same seq, newer totals) if that heartbeat was never published; otherwise it is
appended. No seq gap, which the server's contiguous ack needs, and no information
lost, since heartbeats carry running totals. At `max_events`, busy changes, denials
and further heartbeats are not recorded (each refusal logged as an error; the
session's busy total still reaches the server in its session_ended); session starts
and ends, oops reports, commands and faults always are.

New stream (`restream()`): when the server's ack shows that it holds this stream's
seqs under other events (an outbox file restored from a backup, docs/protocol.md
"ack" item 7), the unacknowledged events move, in one transaction, to a new
`outbox_id` with seqs from 1 and the same event ids; nothing is deleted.

A file that is not a sound SQLite database at open (`Outbox.open`) is moved aside
(`<name>.corrupt-<UTC time>`, with its -wal and -shm) and a fresh outbox starts;
`quarantined` then says which file and why, for the app to report.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from firmware_pi.faults import aside_path
from protocol import Event, EventKind, validate_event_data

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_session (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    session_id      TEXT NOT NULL,
    member_id       TEXT NOT NULL,
    started_wall    REAL NOT NULL,
    last_wall       REAL NOT NULL,
    elapsed_seconds REAL NOT NULL,
    busy_seconds    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands_seen (
    command_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    controller_id TEXT NOT NULL,
    boot_id       TEXT NOT NULL,
    wall_time     REAL NOT NULL,
    mono_time     REAL NOT NULL,
    kind          TEXT NOT NULL,
    data          TEXT NOT NULL,
    published     INTEGER NOT NULL DEFAULT 0
);
"""


DEFAULT_MAX_EVENTS = 20_000
WARN_RATIO = 0.8
# Always recorded, even past the bound: losing one would lose a session or a report.
ESSENTIAL = frozenset({
    EventKind.SESSION_STARTED,
    EventKind.SESSION_ENDED,
    EventKind.OOPS_REPORTED,
    EventKind.COMMAND_APPLIED,
    EventKind.BADGE_ENROLLED,
    EventKind.FAULT,
})


class OutboxClosedError(RuntimeError):
    """The outbox was used after close()."""


class OutboxCorruptError(sqlite3.DatabaseError):
    """The outbox file failed SQLite's integrity check."""


class OutboxFullError(RuntimeError):
    """The outbox is at its bound and this (non-essential) event was not recorded."""


@dataclass(frozen=True)
class Quarantined:
    """A corrupt outbox file moved aside at open, and what was wrong with it."""

    path: Path
    reason: str


@dataclass(frozen=True)
class OpenSession:
    """A session that was running when the controller last wrote to its outbox."""

    session_id: str
    member_id: str
    started_wall: float
    last_wall: float  # wall time of the start or of the last heartbeat
    elapsed_seconds: float
    busy_seconds: float


@dataclass(frozen=True)
class LocalService:
    """Out of service by the machine's own doing (oops button) or a server command."""

    out_of_service: bool = False
    reason: str | None = None


class Outbox:
    """Events of one controller waiting for the server's ack, in seq order."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        warn_ratio: float = WARN_RATIO,
    ) -> None:
        if max_events < 10:
            raise ValueError("max_events must be at least 10")
        self.path = Path(path)
        self.max_events = max_events
        self.warn_at = max(1, int(max_events * warn_ratio))
        self._warned = False
        self.coalesced = 0  # heartbeats folded into an earlier one since opening
        self.refused = 0  # events not recorded at the bound since opening
        self.quarantined: Quarantined | None = None  # set by Outbox.open
        # Reentrant: atomic() holds it while the writes it groups take it again.
        self._lock = threading.RLock()
        self._in_atomic = False
        # One connection shared by the main loop and readers such as len(); the lock
        # serialises them, so sqlite's own same-thread check is not needed.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed event is on disk before append() returns, power cut or not.
            self._db.execute("PRAGMA synchronous=FULL")
            (check,) = self._db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise OutboxCorruptError(f"integrity check failed: {check}")
            self._create_schema()
            self.outbox_id: str = self._meta("outbox_id")
            self._load_counters()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        warn_ratio: float = WARN_RATIO,
    ) -> Outbox:
        """The outbox at `path`; a corrupt file is moved aside and a fresh one started."""
        try:
            return cls(path, max_events=max_events, warn_ratio=warn_ratio)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise  # e.g. locked by another process: the file itself is fine
            moved = _quarantine(Path(path))
            log.critical("outbox %s is corrupt (%s): moved to %s, starting a fresh outbox",
                         path, exc, moved)
            outbox = cls(path, max_events=max_events, warn_ratio=warn_ratio)
            outbox.quarantined = Quarantined(moved, str(exc))
            return outbox

    def _load_counters(self) -> None:
        """The in-memory copies of what the database holds (after open or a rollback)."""
        with self._reading() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._count = int(count)
        self._last_seq = int(rows["last_seq"])
        self.outbox_id = str(rows["outbox_id"])

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
            columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
            if "published" not in columns:  # an outbox made before published was tracked
                db.execute(
                    "ALTER TABLE events ADD COLUMN published INTEGER NOT NULL DEFAULT 1"
                )

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Every outbox write inside this block commits together, or none does."""
        with self._lock:
            if self._in_atomic:
                yield  # already inside one: part of the outer transaction
                return
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            self._in_atomic = True
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._load_counters()
                raise
            finally:
                self._in_atomic = False

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            if self._in_atomic:
                yield db  # atomic() commits or rolls back the whole
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxClosedError(f"outbox {self.path} is closed")
        return self._db

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

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
        Near the bound a heartbeat may come back with the seq of the earlier heartbeat
        it replaced; at the bound a non-essential event raises OutboxFullError.
        """
        clean = validate_event_data(kind, data)
        self._check_bound(kind)
        if kind is EventKind.SESSION_HEARTBEAT and self._count >= self.warn_at:
            folded = self._coalesce_heartbeat(clean, wall_time, mono_time, boot_id)
            if folded is not None:
                return folded
        if self._count >= self.max_events and kind not in ESSENTIAL:
            self.refused += 1
            raise OutboxFullError(f"outbox full ({self._count} events): {kind.value} not recorded")
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
            self._track_session(db, kind, clean, wall_time)
        self._last_seq = seq
        self._count += 1
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

    def _check_bound(self, kind: EventKind) -> None:
        if self._count >= self.warn_at and not self._warned:
            self._warned = True
            log.warning(
                "outbox holds %d of at most %d events (server unreachable?): heartbeats are "
                "now coalesced; at %d, busy changes and denials will not be recorded",
                self._count, self.max_events, self.max_events,
            )
        elif self._count < self.warn_at * 0.9 and self._warned:
            self._warned = False
            log.info("outbox back to %d events", self._count)

    def _coalesce_heartbeat(
        self, clean: dict[str, Any], wall_time: float, mono_time: float, boot_id: str
    ) -> Event | None:
        """Fold a heartbeat into the session's latest pending heartbeat if that one was
        never published; None when there is no such heartbeat (append instead)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT seq, event_id, controller_id, published FROM events"
                " WHERE kind = ? AND json_extract(data, '$.session_id') = ?"
                " ORDER BY seq DESC LIMIT 1",
                (EventKind.SESSION_HEARTBEAT.value, clean["session_id"]),
            ).fetchone()
            if row is None or row[3]:
                return None  # none pending, or already sent: a sent row never changes
            seq, event_id, controller_id, _published = row
            db.execute(
                "UPDATE events SET wall_time = ?, mono_time = ?, boot_id = ?, data = ?"
                " WHERE seq = ?",
                (wall_time, mono_time, boot_id, json.dumps(clean), seq),
            )
            self._track_session(db, EventKind.SESSION_HEARTBEAT, clean, wall_time)
        self.coalesced += 1
        return Event(
            event_id=event_id,
            controller_id=controller_id,
            outbox_id=self.outbox_id,
            seq=seq,
            boot_id=boot_id,
            wall_time=wall_time,
            mono_time=mono_time,
            kind=EventKind.SESSION_HEARTBEAT,
            data=clean,
        )

    @staticmethod
    def _track_session(
        db: sqlite3.Connection, kind: EventKind, data: dict[str, Any], wall_time: float
    ) -> None:
        """Keep the open-session row in step with the session's events."""
        if kind is EventKind.SESSION_STARTED:
            db.execute(
                "INSERT OR REPLACE INTO open_session (id, session_id, member_id, started_wall,"
                " last_wall, elapsed_seconds, busy_seconds) VALUES (1, ?, ?, ?, ?, 0, 0)",
                (data["session_id"], data["member_id"], wall_time, wall_time),
            )
        elif kind is EventKind.SESSION_HEARTBEAT:
            db.execute(
                "UPDATE open_session SET last_wall = ?, elapsed_seconds = ?, busy_seconds = ?"
                " WHERE session_id = ?",
                (wall_time, data["elapsed_seconds"], data["busy_seconds"], data["session_id"]),
            )
        elif kind is EventKind.SESSION_ENDED:
            db.execute("DELETE FROM open_session WHERE session_id = ?", (data["session_id"],))

    def open_session(self) -> OpenSession | None:
        """The session left open by the previous run (crash, power cut), if any."""
        with self._reading() as db:
            row = db.execute(
                "SELECT session_id, member_id, started_wall, last_wall, elapsed_seconds,"
                " busy_seconds FROM open_session WHERE id = 1"
            ).fetchone()
        return None if row is None else OpenSession(*row)

    # -- local service state and applied commands -----------------------------------------

    def local_service(self) -> LocalService:
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'local_service'").fetchone()
        if row is None:
            return LocalService()
        d = json.loads(row[0])
        return LocalService(bool(d.get("out_of_service")), d.get("reason"))

    def set_local_service(self, state: LocalService) -> None:
        value = json.dumps({"out_of_service": state.out_of_service, "reason": state.reason})
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('local_service', ?)", (value,)
            )

    def command_seen(self, command_id: str) -> bool:
        with self._reading() as db:
            row = db.execute(
                "SELECT 1 FROM commands_seen WHERE command_id = ?", (command_id,)
            ).fetchone()
        return row is not None

    def remember_command(self, command_id: str, expires_at: float, *, now: float) -> None:
        """Record an applied command id (until it expires); forget the expired ones."""
        with self._transaction() as db:
            db.execute("DELETE FROM commands_seen WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO commands_seen (command_id, expires_at) VALUES (?, ?)",
                (command_id, expires_at),
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

    def mark_published(self, up_to_seq: int) -> None:
        """Events up to `up_to_seq` may have left: from now on they are never rewritten.

        Called before the events are handed to the broker, so that a crash in between
        errs on the side of "sent".
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE events SET published = 1 WHERE seq <= ? AND published = 0",
                (up_to_seq,),
            )

    def restream(self) -> str:
        """Move every unacked event to a new stream: a new `outbox_id`, seqs from 1 in
        the same order, the same event ids, none published yet. One transaction;
        returns the previous outbox id."""
        previous = self.outbox_id
        new_id = uuid.uuid4().hex
        with self._transaction() as db:
            rows = db.execute(
                "SELECT seq, event_id, controller_id, boot_id, wall_time, mono_time, kind, data"
                " FROM events ORDER BY seq"
            ).fetchall()
            db.execute("DELETE FROM events")
            db.executemany(
                "INSERT INTO events (seq, event_id, controller_id, boot_id, wall_time,"
                " mono_time, kind, data, published) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                [(n, *row[1:]) for n, row in enumerate(rows, start=1)],
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'outbox_id'", (new_id,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(len(rows)),))
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('previous_outbox_id', ?)",
                (previous,),
            )
        self.outbox_id = new_id
        self._last_seq = len(rows)
        log.warning("outbox stream %s replaced by %s: %d unacked events moved, seqs from 1",
                    previous, new_id, len(rows))
        return previous

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
        self._count -= cursor.rowcount
        return cursor.rowcount

    def __len__(self) -> int:
        """Events waiting for the server's ack."""
        if self._db is None:
            raise OutboxClosedError(f"outbox {self.path} is closed")
        return self._count

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


def _quarantine(path: Path) -> Path:
    """Move a corrupt database and its -wal/-shm aside; the new name of the main file."""
    target = aside_path(path)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{target}{suffix}"))
    os.replace(path, target)
    return target


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for a file that is not, or no longer, a sound database; not for a lock,
    a full disk or a permission problem."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    return isinstance(exc, OutboxCorruptError) or name.startswith(
        ("SQLITE_CORRUPT", "SQLITE_NOTADB")
    )
