"""Bearer tokens checked recently: kept a short time, forgotten on any handled command."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.api.main import create_app
from server.api.token_cache import TokenCache
from server.bootstrap import ServerRuntime
from server.domain.access import Principal
from server.service_layer import commands as cmds

ADA = Principal(member_id="ada")


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_cache_keeps_a_principal_for_its_ttl() -> None:
    clock = ManualClock()
    cache = TokenCache(1.0, clock=clock)
    cache.put("h", ADA, cache.generation)
    clock.now += 0.9
    assert cache.get("h") == ADA
    clock.now += 0.2
    assert cache.get("h") is None


def test_token_cache_forgets_everything_when_cleared() -> None:
    cache = TokenCache(1.0)
    cache.put("h", ADA, cache.generation)
    cache.clear()
    assert cache.get("h") is None


def test_token_cache_drops_a_lookup_that_started_before_a_clear() -> None:
    cache = TokenCache(1.0)
    generation = cache.generation
    cache.clear()
    cache.put("h", ADA, generation)
    assert cache.get("h") is None


def test_token_cache_keeps_nothing_with_a_zero_ttl() -> None:
    cache = TokenCache(0.0)
    cache.put("h", ADA, cache.generation)
    assert cache.get("h") is None


def test_token_cache_revocation_through_the_bus_applies_to_the_next_request(
    lab: ServerRuntime,
) -> None:
    created = lab.bus.handle(cmds.CreateApiToken("mona", "tests"))
    headers = {"Authorization": f"Bearer {created.token}"}
    with TestClient(create_app(lab)) as client:
        before = client.get("/api/machines/laser", headers=headers).status_code
        lab.bus.handle(cmds.RevokeApiToken("mona", created.token_id))
        after = client.get("/api/machines/laser", headers=headers).status_code
    assert (before, after) == (200, 401)


def test_token_cache_kept_after_a_controllers_event() -> None:
    cache = TokenCache(1.0)
    cache.put("h", ADA, cache.generation)
    cache.after_command(cmds.IngestEvent("fablab/v1/lab/laser/events", b"{}"))
    assert cache.get("h") == ADA


def test_token_cache_emptied_after_a_persons_command() -> None:
    cache = TokenCache(1.0)
    cache.put("h", ADA, cache.generation)
    cache.after_command(cmds.RevokeApiToken("ada", 1))
    assert cache.get("h") is None
