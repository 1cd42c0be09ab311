"""Granting and revoking trainings, trainer rules and lapsing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from protocol import EventKind, Level, badge_digest, config_topic, verify_config
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Headers, Ingest

KEY = bytes.fromhex(KEY_HEX)


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def _level_in_snapshot(sent: list[OutgoingMessage], uid: str) -> Level | None:
    config = [m for m in sent if m.topic == config_topic(SITE, "laser")][-1]
    entry = verify_config(config.payload, KEY).lookup(badge_digest(KEY, uid))
    return entry.level if entry else None


def _grant(level: str, member: str = "nora") -> dict[str, str]:
    return {"member_id": member, "training_type_id": "laser", "level": level}


def test_trainings_trainer_grants_autonomous_on_own_type(
    client: TestClient, auth: Headers, sent: list[OutgoingMessage]
) -> None:
    response = client.post("/api/trainings", json=_grant("autonomous"), headers=auth("tom"))
    assert response.status_code == 201
    assert response.json()["granted_by"] == "tom"
    assert _level_in_snapshot(sent, "04FFEE01") is Level.AUTONOMOUS


def test_trainings_trainer_cannot_make_trainers(client: TestClient, auth: Headers) -> None:
    response = client.post("/api/trainings", json=_grant("trainer"), headers=auth("tom"))
    assert response.status_code == 403
    assert "up to autonomous" in response.json()["detail"]


def test_trainings_trainer_cannot_grant_other_types(
    client: TestClient, lab: ServerRuntime, auth: Headers
) -> None:
    lab.bus.handle(cmds.AddMachine("cnc", "CNC", SITE))
    body = {"member_id": "nora", "training_type_id": "cnc", "level": "supervised"}
    assert client.post("/api/trainings", json=body, headers=auth("tom")).status_code == 403


def test_trainings_manager_grants_trainer_level(client: TestClient, auth: Headers) -> None:
    response = client.post("/api/trainings", json=_grant("trainer"), headers=auth("mona"))
    assert response.status_code == 201


def test_trainings_revoke_removes_badge_from_snapshot(
    client: TestClient, auth: Headers, sent: list[OutgoingMessage]
) -> None:
    body = {"member_id": "ada", "training_type_id": "laser"}
    assert client.post("/api/trainings/revoke", json=body, headers=auth("tom")).status_code == 204
    assert _level_in_snapshot(sent, "04A1B2C3") is None


def test_trainings_expired_grant_is_refused(client: TestClient, auth: Headers) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    response = client.post(
        "/api/trainings", json={**_grant("supervised"), "expires_at": past}, headers=auth("mona")
    )
    assert response.status_code == 400


def test_trainings_maker_lists_only_own(client: TestClient, auth: Headers) -> None:
    page = client.get("/api/trainings", headers=auth("ada")).json()
    assert {t["member_id"] for t in page["items"]} == {"ada"}
    other = client.get("/api/trainings", params={"member": "tom"}, headers=auth("ada"))
    assert other.status_code == 403


def test_trainings_lapse_counts_from_last_real_session(
    client: TestClient, lab: ServerRuntime, auth: Headers, ingest: Ingest, events: EventFactory
) -> None:
    granted = datetime.now(UTC) - timedelta(days=300)
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.AUTONOMOUS, at=granted))
    client.patch("/api/training-types/laser", json={"lapse_months": 6}, headers=auth("mona"))
    used = datetime.now(UTC) - timedelta(days=170)
    events.wall = used.timestamp()
    ingest(
        events(
            EventKind.SESSION_STARTED,
            session_id="old",
            badge_uid="04FFEE01",
            member_id="nora",
            level="autonomous",
            snapshot_version=1,
        )
    )
    page = client.get("/api/trainings", params={"member": "nora"}, headers=auth("mona")).json()
    [nora] = page["items"]
    lapses = datetime.fromisoformat(nora["lapses_at"])
    assert timedelta(days=180) <= lapses - used <= timedelta(days=184)
    lapsing = client.get("/api/trainings/lapsing", params={"within_days": 30}, headers=auth("tom"))
    assert [t["member_id"] for t in lapsing.json()] == ["nora"]


def test_trainings_lapsed_training_leaves_snapshot(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=400)
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.AUTONOMOUS, at=long_ago))
    lab.bus.handle(cmds.UpdateTrainingType("laser", lapse_months=12))
    assert _level_in_snapshot(sent, "04FFEE01") is None
    assert _level_in_snapshot(sent, "04A1B2C3") is Level.AUTONOMOUS  # granted just now


def test_trainings_enrollment_gives_next_unknown_badge(
    client: TestClient, auth: Headers, ingest: Ingest, events: EventFactory
) -> None:
    response = client.post(
        "/api/machines/laser/enroll", json={"member_id": "tom"}, headers=auth("mona")
    )
    enrollment = response.json()
    ingest(events(EventKind.BADGE_DENIED, badge_uid="04BADBAD", reason="unknown_badge"))
    done = client.get(f"/api/machines/laser/enroll/{enrollment['id']}", headers=auth("mona")).json()
    assert done["badge_uid"] == "04BADBAD"
    badges = client.get("/api/members/tom/badges", headers=auth("mona")).json()
    assert [b["uid"] for b in badges] == ["04BADBAD"]
