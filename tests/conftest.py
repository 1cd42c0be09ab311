"""Fixtures shared by the whole test suite.

Integration fixtures (each starts a real server, once per test session):

- ``mosquitto`` -> MosquittoServer: a Mosquitto broker on a free 127.0.0.1 port, with
  ``.host``, ``.port``, ``.url`` ("mqtt://127.0.0.1:PORT"), ``.stop()`` and ``.start()``
  (restart on the same port). Retained messages and sessions do not survive a restart.
- ``mosquitto_factory(persistence=False, anonymous=True, extra_config=(), listen=True,
  port=None) -> MosquittoServer``: more brokers, each started now and stopped at the end
  of the session; ``persistence=True`` keeps retained messages and persistent sessions
  across ``stop()``/``start()``, like production; ``extra_config`` lines are appended to
  the generated mosquitto.conf; ``listen=False`` leaves listeners and logins to them
  (e.g. ``include_dir`` of `fablab mosquitto-config` output), ``port`` naming the one
  to wait for. ``.reload()`` sends SIGHUP as ``systemctl reload mosquitto`` does.
- ``postgres_url`` -> str: a SQLAlchemy URL ``postgresql+psycopg://USER@127.0.0.1:PORT/DB``
  of a throwaway cluster (``initdb`` + ``pg_ctl``), or ``$FABLAB_TEST_DATABASE_URL``.
- ``fresh_postgres_url`` -> str: a new empty database on that server for one test,
  dropped afterwards.

Tests that use them are marked ``integration`` (and ``postgres``) automatically, so
``pytest -m "not integration"`` runs the unit tests only. A missing ``mosquitto`` or
PostgreSQL binary fails the test with the command that installs it: never a silent skip.

Helpers to import: ``from tests.fixtures import free_port, wait_for_port``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fixtures import (
    MissingToolError,
    MosquittoServer,
    PostgresCluster,
    find_mosquitto,
    find_postgres_bin_dir,
)
from tests.fixtures.postgres import (
    create_database,
    create_database_from_template,
    drop_database,
    unique_database_name,
    with_database,
)

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "FABLAB_TEST_DATABASE_URL"

# Hypothesis: no per-example deadline (CI machines are small and shared); CI runs a
# fixed seed sequence so that a red build can be reproduced.
settings.register_profile("fablab", deadline=None)
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
_default_profile = "ci" if os.environ.get("CI") else "fablab"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default_profile))

_MQTT_FIXTURES = {"mosquitto", "mosquitto_factory"}
_POSTGRES_FIXTURES = {"postgres_url", "fresh_postgres_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & (_MQTT_FIXTURES | _POSTGRES_FIXTURES):
            item.add_marker(pytest.mark.integration)
        if used & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


def pytest_report_header() -> list[str]:
    lines = []
    try:
        lines.append(f"mosquitto: {find_mosquitto()}")
    except MissingToolError:
        lines.append("mosquitto: NOT INSTALLED (integration tests will fail)")
    if os.environ.get(DATABASE_URL_ENV):
        lines.append(f"postgres: {DATABASE_URL_ENV} is set")
    else:
        try:
            lines.append(f"postgres: throwaway cluster from {find_postgres_bin_dir()}")
        except MissingToolError:
            lines.append("postgres: initdb/pg_ctl NOT INSTALLED (postgres tests will fail)")
    return lines


def _fail_missing(exc: MissingToolError) -> None:
    pytest.fail(str(exc), pytrace=False)


# -- Mosquitto -------------------------------------------------------------------------

MosquittoFactory = Callable[..., MosquittoServer]


@pytest.fixture(scope="session")
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoFactory]:
    brokers: list[MosquittoServer] = []

    def make(
        *,
        persistence: bool = False,
        anonymous: bool = True,
        extra_config: Sequence[str] = (),
        listen: bool = True,
        port: int | None = None,
    ) -> MosquittoServer:
        try:
            broker = MosquittoServer(
                tmp_path_factory.mktemp("mosquitto"),
                persistence=persistence,
                anonymous=anonymous,
                extra_config=extra_config,
                listen=listen,
                port=port,
            )
        except MissingToolError as exc:
            _fail_missing(exc)
            raise  # pragma: no cover - pytest.fail raised
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        try:
            broker.stop()
        except Exception:
            logger.exception("could not stop %r", broker)


_session_brokers: list[MosquittoServer] = []


@pytest.fixture(scope="session")
def mosquitto(mosquitto_factory: MosquittoFactory) -> MosquittoServer:
    broker = mosquitto_factory()
    _session_brokers.append(broker)
    return broker


@pytest.fixture(autouse=True)
def _restart_session_mosquitto() -> Iterator[None]:
    """A test that stopped the shared broker and failed before restarting it must not
    break every later test."""
    yield
    for broker in _session_brokers:
        if not broker.running:
            logger.warning("a test left the shared mosquitto stopped; restarting it")
            broker.start()


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    external = os.environ.get(DATABASE_URL_ENV)
    if external:
        yield external
        return
    try:
        cluster = PostgresCluster()
    except MissingToolError as exc:
        _fail_missing(exc)
        raise  # pragma: no cover - pytest.fail raised
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own for one test (migrations, create_all…)."""
    name = unique_database_name()
    create_database(postgres_url, name)
    try:
        yield with_database(postgres_url, name)
    finally:
        drop_database(postgres_url, name)


@pytest.fixture(scope="session")
def sqlite_schema_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per test session, copied by `migrated_sqlite_url`.

    Running the migrations for each of the hundreds of tests that want an empty
    database costs minutes; a copy of the migrated file is the same schema."""
    from server.adapters.migrations import upgrade

    path = tmp_path_factory.mktemp("schema-template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    # WAL mode: fold the log into the main file so that copying the file copies it all.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def migrated_sqlite_url(template: Path, path: Path) -> str:
    """A SQLite URL at `path` holding a copy of the migrated `template`."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def postgres_schema_template(postgres_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database migrated to head once per test session, the
    template of every `database_url` on PostgreSQL (nothing stays connected to it)."""
    from server.adapters.migrations import upgrade

    name = unique_database_name("fablab_tmpl")
    create_database(postgres_url, name)
    upgrade(with_database(postgres_url, name))
    yield name
    drop_database(postgres_url, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty server database migrated to head, once on SQLite and once on PostgreSQL
    (each a copy of a once-migrated template)."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_schema_template")
        yield migrated_sqlite_url(template, tmp_path / "server.sqlite3")
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    template_name: str = request.getfixturevalue("postgres_schema_template")
    name = unique_database_name()
    create_database_from_template(postgres_url, name, template_name)
    try:
        yield with_database(postgres_url, name)
    finally:
        drop_database(postgres_url, name)


# -- misc --------------------------------------------------------------------------------


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """argon2id with minimal cost in tests: production keeps the library's defaults.

    The hash is meant to be slow; hundreds of test members would make the suite crawl.
    """
    from argon2 import PasswordHasher

    from server.adapters import secrets

    original = secrets._hasher
    secrets._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    secrets._hasher = original
