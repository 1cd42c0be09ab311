"""The database engine: an ack follows a durable commit on every supported engine."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from server.adapters.db import make_engine


def test_db_sqlite_commits_are_flushed_to_disk_before_returning(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'durable.sqlite3'}")
    try:
        with engine.connect() as connection:
            # 2 = FULL: in WAL mode, NORMAL (1) may lose the last commits on power loss.
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_db_postgres_commits_synchronously_even_when_the_database_default_is_off(
    fresh_postgres_url: str,
) -> None:
    admin = create_engine(fresh_postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = connection.exec_driver_sql("SELECT current_database()").scalar()
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit TO off'))
    finally:
        admin.dispose()
    engine = make_engine(fresh_postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        engine.dispose()
