"""The API's connection pool: sized from the settings, a 503 when exhausted, and
ingest on a pool of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from protocol import EventKind, events_topic
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.access import Role
from server.service_layer import commands as cmds
from tests.server.conftest import SITE, EventFactory


@pytest.fixture
def small_pool(database_url: str) -> Iterator[ServerRuntime]:
    """Two pooled connections (no overflow), a checkout waits 0.2 s at most."""
    settings = Settings(
        database_url=database_url, site=SITE,
        db_pool_size=2, db_max_overflow=0, db_pool_timeout_s=0.2, db_request_slots=1,
    )  # fmt: skip
    runtime = ServerRuntime(settings, mqtt_enabled=False)
    runtime.bus.handle(cmds.AddMachine("laser", "Laser cutter", SITE))
    runtime.bus.handle(cmds.AddMember("Mona", member_id="mona"))
    runtime.bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    yield runtime
    runtime.dispose()


def _hold_every_api_connection(runtime: ServerRuntime, stack: ExitStack) -> None:
    for _ in range(runtime.settings.db_pool_size):
        stack.enter_context(runtime.engine.connect())


def test_api_pool_sized_from_the_settings(small_pool: ServerRuntime) -> None:
    pool = small_pool.engine.pool
    assert (pool.size(), pool.timeout()) == (2, 0.2)  # type: ignore[attr-defined]


def test_api_answers_503_when_no_pooled_connection_frees_up(small_pool: ServerRuntime) -> None:
    token = small_pool.bus.handle(cmds.CreateApiToken("mona", "tests")).token
    with TestClient(create_app(small_pool)) as client, ExitStack() as held:
        _hold_every_api_connection(small_pool, held)
        response = client.get("/api/machines/laser", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def test_ingest_commits_while_the_api_pool_is_exhausted(small_pool: ServerRuntime) -> None:
    events = EventFactory(controller_id="laser")
    event = events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge")
    with ExitStack() as held:
        _hold_every_api_connection(small_pool, held)
        small_pool.ingest_bus.handle(cmds.IngestEvent(events_topic(SITE, "laser"), event.encode()))
    with small_pool.new_uow() as uow:
        assert uow.events.by_event_id(event.event_id) is not None
