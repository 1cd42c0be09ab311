"""Running Alembic migrations from code (CLI, demo, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema to `revision` (the newest by default)."""
    command.upgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise if the models and the migrated schema differ (`alembic check`)."""
    command.check(alembic_config(database_url))


def schema_problem(engine: Engine) -> str | None:
    """What stops this code from using the database's schema, as one line saying what to
    do; None when the schema is at this version's newest revision."""
    heads = set(ScriptDirectory.from_config(alembic_config(str(engine.url))).get_heads())
    # Read alembic's version table directly: a MigrationContext would log at INFO on
    # every admin command.
    with engine.connect() as connection:
        current: set[str] = set()
        if inspect(connection).has_table(VERSION_TABLE):
            current = set(connection.scalars(text("SELECT version_num FROM alembic_version")))
    if current == heads:
        return None
    if not current:
        return "the database has no fablab tables yet: run `fablab db upgrade` first"
    return (f"the database schema ({', '.join(sorted(current))}) is not this version's "
            f"({', '.join(sorted(heads))}): run `fablab db upgrade`")
