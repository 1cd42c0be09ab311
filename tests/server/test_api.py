"""The read API of the walking skeleton: machines' live state and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from protocol import ControllerState, ControllerStatus, EventKind, Level, status_topic
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from tests.server.conftest import SITE, EventFactory, Headers, Ingest


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def _online(lab: ServerRuntime) -> None:
    status = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "boot-1", 1.0)
    lab.bus.handle(cmds.RecordControllerStatus(status_topic(SITE, "laser"), status.encode()))


def _start(events: EventFactory) -> object:
    return events(
        EventKind.SESSION_STARTED,
        session_id="s1",
        badge_uid="04A1B2C3",
        member_id="ada",
        level=Level.AUTONOMOUS.value,
        snapshot_version=1,
    )


def _stamp(wall: float) -> str:
    """How the API writes this wall time, to the second."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_api_machines_offline_before_controller_says_online(client: TestClient) -> None:
    [machine] = client.get("/api/machines").json()
    assert (machine["id"], machine["state"]) == ("laser", "offline")


def test_api_machines_free_when_controller_online(client: TestClient, lab: ServerRuntime) -> None:
    _online(lab)
    assert client.get("/api/machines").json()[0]["state"] == "free"


def test_api_machines_in_use_names_member_and_start(
    client: TestClient, lab: ServerRuntime, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    _online(lab)
    ingest(_start(events))
    machine = client.get("/api/machines/laser", headers=auth("nora")).json()
    assert machine["state"] == "in_use"
    assert machine["current_session"]["member_name"] == "Ada Lovelace"
    assert machine["current_session"]["started_at"].startswith(_stamp(events.wall))


def test_api_machines_anonymous_floor_hides_who_is_working(
    client: TestClient, lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    _online(lab)
    ingest(_start(events))
    current = client.get("/api/machines/laser").json()["current_session"]
    assert current["started_at"].startswith(_stamp(events.wall))
    assert (current["member_id"], current["member_name"]) == (None, None)


def test_api_sessions_anonymous_list_is_anonymised_open_data(
    client: TestClient, ingest: Ingest, events: EventFactory
) -> None:
    ingest(_start(events))
    [session] = client.get("/api/sessions").json()["items"]
    assert (session["machine_id"], session["member_id"]) == ("laser", None)


def test_api_sessions_maker_sees_only_own(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(_start(events))
    assert client.get("/api/sessions", headers=auth("ada")).json()["total"] == 1
    assert client.get("/api/sessions", headers=auth("nora")).json()["total"] == 0
    assert client.get("/api/sessions/s1", headers=auth("nora")).status_code == 404


def test_api_sessions_manager_filters_by_member(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(_start(events))
    mona = auth("mona")
    assert client.get("/api/sessions", params={"member": "ada"}, headers=mona).json()["total"] == 1
    assert client.get("/api/sessions", params={"member": "nora"}, headers=mona).json()["total"] == 0


def test_api_sessions_rejects_bad_page_size_with_message(client: TestClient) -> None:
    response = client.get("/api/sessions", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_api_unknown_machine_is_404_with_message(client: TestClient) -> None:
    response = client.get("/api/machines/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "no machine nope"}


def test_api_floor_page_lists_machines(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "Laser cutter" in response.text


def test_api_denials_lists_refused_taps(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="unknown_badge"))
    [denial] = client.get("/api/denials", headers=auth("mona")).json()["items"]
    assert (denial["badge_uid"], denial["member_id"]) == ("04FFEE01", "nora")
