"""A training granted or revoked through the API decides the next tap at the machine."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from protocol import badge_digest
from server.api.main import create_app
from server.domain.access import Role
from server.service_layer import commands as cmds
from tests.e2e.conftest import KEY_HEX, NORA_BADGE, Lab, wait_until

KEY = bytes.fromhex(KEY_HEX)
GRANT_DEADLINE_S = 2.0


@pytest.fixture
def api(lab: Lab) -> Iterator[tuple[TestClient, dict[str, str]]]:
    assert lab.server is not None
    lab.server.bus.handle(cmds.AddMember("Mona Manager", member_id="mona"))
    lab.server.bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    token = lab.server.bus.handle(cmds.CreateApiToken("mona", "e2e")).token
    with TestClient(create_app(lab.server)) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def _nora_on_snapshot(lab: Lab) -> bool:
    assert lab.controller is not None
    snapshot = lab.controller.controller.snapshot
    return snapshot is not None and snapshot.lookup(badge_digest(KEY, NORA_BADGE)) is not None


def test_training_granted_via_api_lets_badge_in_within_2s(
    lab: Lab, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = api
    lab.tap(NORA_BADGE)
    time.sleep(0.3)
    assert not lab.relay_on, "not trained yet"

    body = {"member_id": "nora", "training_type_id": "laser", "level": "autonomous"}
    started = time.monotonic()
    assert client.post("/api/trainings", json=body, headers=headers).status_code == 201
    wait_until(lambda: _nora_on_snapshot(lab), GRANT_DEADLINE_S, "grant reaching the controller")
    lab.tap(NORA_BADGE)
    wait_until(lambda: lab.relay_on, GRANT_DEADLINE_S, "relay on for the newly trained badge")
    assert time.monotonic() - started < GRANT_DEADLINE_S


def test_training_revoked_via_api_denies_next_tap_within_2s(
    lab: Lab, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = api
    grant = {"member_id": "nora", "training_type_id": "laser", "level": "autonomous"}
    client.post("/api/trainings", json=grant, headers=headers)
    wait_until(lambda: _nora_on_snapshot(lab), GRANT_DEADLINE_S, "grant reaching the controller")

    started = time.monotonic()
    revoke = {"member_id": "nora", "training_type_id": "laser"}
    assert client.post("/api/trainings/revoke", json=revoke, headers=headers).status_code == 204
    wait_until(lambda: not _nora_on_snapshot(lab), GRANT_DEADLINE_S, "revoke reaching it")
    lab.tap(NORA_BADGE)
    time.sleep(0.3)
    assert not lab.relay_on
    assert time.monotonic() - started < GRANT_DEADLINE_S + 0.5
