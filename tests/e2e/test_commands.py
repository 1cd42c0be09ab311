"""Commands from the API reach the machine over real Mosquitto and are confirmed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.domain.access import Role
from server.service_layer import commands as cmds
from tests.e2e.conftest import ADA_BADGE, NORA_BADGE, Lab, wait_until


@pytest.fixture
def manager(lab: Lab) -> Iterator[tuple[TestClient, dict[str, str]]]:
    assert lab.server is not None
    lab.server.bus.handle(cmds.AddMember("Mona Manager", member_id="mona"))
    lab.server.bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    token = lab.server.bus.handle(cmds.CreateApiToken("mona", "e2e")).token
    with TestClient(create_app(lab.server)) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def _statuses(client: TestClient, headers: dict[str, str]) -> list[str]:
    return [c["status"] for c in client.get("/api/machines/laser/commands", headers=headers).json()]


def test_commands_lock_ends_the_session_and_is_confirmed(
    lab: Lab, manager: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = manager
    lab.tap(ADA_BADGE)
    wait_until(lambda: lab.relay_on, what="session running")
    response = client.post("/api/machines/laser/lock", json={"reason": "closing"}, headers=headers)
    assert response.status_code == 200
    wait_until(lambda: not lab.relay_on, what="relay off after the lock")
    wait_until(lambda: _statuses(client, headers) == ["applied"], what="lock confirmed")


def test_commands_enrollment_by_tapping_attaches_the_badge(
    lab: Lab, manager: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = manager
    new_badge = "04E0E0E0"
    enrollment = client.post(
        "/api/machines/laser/enroll", json={"member_id": "nora"}, headers=headers
    ).json()
    wait_until(lambda: _statuses(client, headers) == ["applied"], what="controller enrolling")
    lab.tap(new_badge)
    url = f"/api/machines/laser/enroll/{enrollment['id']}"
    wait_until(lambda: client.get(url, headers=headers).json()["badge_uid"] == new_badge)
    badges = client.get("/api/members/nora/badges", headers=headers).json()
    assert {b["uid"] for b in badges} == {NORA_BADGE, new_badge}
    assert not lab.relay_on, "an enrolment tap never switches the tool on"
