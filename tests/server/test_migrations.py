"""Alembic migrations build the schema the models describe."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from server.adapters.migrations import check
from server.adapters.orm import Base


def test_migrations_upgrade_empty_database_to_every_table(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_show_no_drift_from_models(database_url: str) -> None:
    check(database_url)  # raises on any difference
