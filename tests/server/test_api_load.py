"""The API under more concurrent clients than worker threads and pooled connections.

A real uvicorn serves the app on a tiny thread pool and connection pool; every request
of every client must be answered (no 5xx, no stall until the pool's timeout).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.access import Role
from server.service_layer import commands as cmds
from tests.fixtures import free_port, wait_for_port

SITE = "lab"
CLIENTS = 20
REQUESTS_PER_CLIENT = 2
# Far below the pool timeout: a stalled request fails the test instead of waiting it out.
REQUEST_TIMEOUT_S = 10.0
# The whole load is bounded too (it takes about a second when nothing stalls).
LOAD_TIMEOUT_S = 40.0


@dataclass
class LiveApi:
    url: str
    token: str


def _seed(runtime: ServerRuntime) -> str:
    bus = runtime.bus
    for machine in ("laser", "printer", "lathe"):
        bus.handle(cmds.AddMachine(machine, machine.title(), SITE))
    bus.handle(cmds.AddMember("Mona", member_id="mona"))
    bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    token: str = bus.handle(cmds.CreateApiToken("mona", "load test")).token
    return token


@pytest.fixture
def tight_api(database_url: str) -> Iterator[LiveApi]:
    """uvicorn with 4 worker threads over 2 pooled connections, on a seeded lab."""
    settings = Settings(
        database_url=database_url, site=SITE,
        http_threads=4, db_pool_size=2, db_max_overflow=0, db_request_slots=1,
    )  # fmt: skip
    runtime = ServerRuntime(settings, mqtt_enabled=False)
    token = _seed(runtime)
    port = free_port()
    config = uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port,
                            log_level="warning", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        assert wait_for_port("127.0.0.1", port, 10), "uvicorn did not start"
        yield LiveApi(f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.stop()


async def _client(http: httpx.AsyncClient, token: str, paths: list[str]) -> list[str]:
    """GET each path in turn; the failures, as text."""
    failures = []
    headers = {"Authorization": f"Bearer {token}"}
    for path in paths:
        try:
            response = await http.get(path, headers=headers)
        except httpx.HTTPError as exc:
            failures.append(f"{path}: {type(exc).__name__}")
            continue
        if response.status_code != 200:
            failures.append(f"{path}: {response.status_code} {response.text[:120]}")
    return failures


async def _load(api: LiveApi, paths: list[str]) -> list[str]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=api.url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as http:
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                results = await asyncio.gather(
                    *(_client(http, api.token, paths) for _ in range(CLIENTS))
                )
        except TimeoutError:
            return [f"the load did not end within {LOAD_TIMEOUT_S} s"]
    return [failure for failures in results for failure in failures]


def test_api_answers_every_request_when_clients_outnumber_threads_and_connections(
    tight_api: LiveApi,
) -> None:
    # The list is the live floor; the others are plain synchronous routes reading the
    # database and serialising a response model in a worker thread.
    paths = ["/api/machines", "/api/machines/laser", "/api/members/mona"] * REQUESTS_PER_CLIENT
    failures = asyncio.run(_load(tight_api, paths))
    assert failures == []
