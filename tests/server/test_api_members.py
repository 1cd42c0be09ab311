"""Managing members and badges through the API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from protocol import badge_digest, config_topic, verify_config
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer.commands import OutgoingMessage
from tests.server.conftest import KEY_HEX, SITE, Headers


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def _snapshot_has(sent: list[OutgoingMessage], uid: str) -> bool:
    key = bytes.fromhex(KEY_HEX)
    config = [m for m in sent if m.topic == config_topic(SITE, "laser")][-1]
    return verify_config(config.payload, key).lookup(badge_digest(key, uid)) is not None


def test_members_create_refuses_unknown_fields_and_changes_nothing(
    client: TestClient, auth: Headers
) -> None:
    mona = auth("mona")
    before = client.get("/api/members", headers=mona).json()["total"]
    response = client.post(
        "/api/members", json={"name": "Eve", "roles": ["admin"], "balance": 1000}, headers=mona
    )
    assert response.status_code == 422
    assert {e["loc"][-1] for e in response.json()["detail"]} == {"roles", "balance"}
    assert client.get("/api/members", headers=mona).json()["total"] == before


def test_members_manager_update_refuses_role_field(client: TestClient, auth: Headers) -> None:
    response = client.patch("/api/members/nora", json={"roles": ["admin"]}, headers=auth("mona"))
    assert response.status_code == 422
    assert client.get("/api/members/nora", headers=auth("mona")).json()["roles"] == []


def test_members_maker_reading_another_member_gets_404(client: TestClient, auth: Headers) -> None:
    assert client.get("/api/members/ada", headers=auth("nora")).status_code == 404
    assert client.get("/api/members/nora", headers=auth("nora")).status_code == 200


def test_members_lost_badge_leaves_the_snapshot(
    client: TestClient, auth: Headers, sent: list[OutgoingMessage]
) -> None:
    [badge] = client.get("/api/members/ada/badges", headers=auth("mona")).json()
    response = client.patch(
        f"/api/badges/{badge['id']}", json={"status": "lost"}, headers=auth("mona")
    )
    assert response.json()["status"] == "lost"
    assert not _snapshot_has(sent, "04A1B2C3")


def test_members_duplicate_badge_is_409(client: TestClient, auth: Headers) -> None:
    response = client.post(
        "/api/members/nora/badges", json={"uid": "04:a1:b2:c3"}, headers=auth("mona")
    )
    assert response.status_code == 409
    assert "already registered" in response.json()["detail"]


def test_members_search_filters_by_name(client: TestClient, auth: Headers) -> None:
    page = client.get("/api/members", params={"search": "lovel"}, headers=auth("mona")).json()
    assert [m["id"] for m in page["items"]] == ["ada"]


def test_members_admin_sets_roles(client: TestClient, auth: Headers) -> None:
    response = client.put(
        "/api/members/nora/roles", json={"roles": ["treasurer"]}, headers=auth("root")
    )
    assert response.json()["roles"] == ["treasurer"]
