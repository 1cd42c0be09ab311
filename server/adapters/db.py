"""Engine and session factory for SQLite (default) or PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns. In WAL mode NORMAL may lose the last
    # commits on power loss, and the server acks an event right after its commit.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _postgres_durability(dbapi_connection: Any, _record: Any) -> None:
    """Commits wait for the WAL flush on every connection, whatever the database or
    role default says: the server acks an event right after its commit."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO on")
    cursor.close()
    dbapi_connection.autocommit = autocommit


@dataclass(frozen=True)
class PoolSize:
    """How many connections an engine keeps (`size`), may add (`overflow`), and how long
    a checkout waits for one before raising `sqlalchemy.exc.TimeoutError`."""

    size: int = 5
    overflow: int = 10
    timeout_s: float = 30.0

    def options(self) -> dict[str, Any]:
        return {
            "pool_size": self.size,
            "max_overflow": self.overflow,
            "pool_timeout": self.timeout_s,
        }


def make_engine(url: str, pool: PoolSize | None = None) -> Engine:
    """An engine for the URL whose commits are durable when they return: SQLite gets WAL
    with synchronous=FULL, foreign keys and its folder created; PostgreSQL
    synchronous_commit=on on every connection. `pool` sizes its connection pool (an
    in-memory SQLite database keeps SQLAlchemy's one connection per thread)."""
    parsed = make_url(url)
    sizing = (pool or PoolSize()).options()
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            sizing = {}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **sizing)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_pre_ping=True, **sizing)
    if parsed.get_backend_name() == "postgresql":
        event.listen(engine, "connect", _postgres_durability)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory lock key for a name."""
    digest = hashlib.sha256(f"fablab-monitor:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def exclusive_run(engine: Engine) -> Callable[[str], AbstractContextManager[bool]]:
    """A factory of `exclusive(name)` blocks for periodic workers.

    On PostgreSQL the block holds a session advisory lock (`pg_try_advisory_lock`) on a
    connection of its own: it yields False at once when another server process holds
    it, and the lock goes with the connection if the holder dies. On SQLite (one box,
    one server process) it always yields True.
    """

    def exclusive(name: str) -> AbstractContextManager[bool]:
        if engine.dialect.name != "postgresql":
            return _acquired()
        return _advisory_lock(engine, advisory_key(name))

    return exclusive


@contextmanager
def _acquired() -> Iterator[bool]:
    yield True


@contextmanager
def _advisory_lock(engine: Engine, key: int) -> Iterator[bool]:
    with engine.connect() as connection:
        acquired = bool(
            connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        )
        connection.commit()  # hold no transaction open while the run does its work
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
