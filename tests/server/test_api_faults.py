"""Faults reported by controllers and seq conflicts, shown to managers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from protocol import Event, EventKind
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from tests.server.conftest import EventFactory, Headers, Ingest


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def _fault(events: EventFactory, code: str = "outbox_full") -> Event:
    return events(EventKind.FAULT, code=code, message=f"{code} on the laser")


def test_api_faults_lists_controller_faults_of_a_machine(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(_fault(events, "reader_failure"))
    ingest(_fault(events, "snapshot_corrupt"))
    body = client.get("/api/faults", params={"machine": "laser"}, headers=auth("mona")).json()
    assert body["total"] == 2
    assert [f["code"] for f in body["items"]] == ["snapshot_corrupt", "reader_failure"]
    assert body["items"][0]["machine_id"] == "laser"
    assert body["items"][0]["message"] == "snapshot_corrupt on the laser"


def test_api_faults_filter_by_code(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(_fault(events, "reader_failure"))
    ingest(_fault(events, "watchdog_near_miss"))
    body = client.get(
        "/api/faults", params={"code": "watchdog_near_miss"}, headers=auth("mona")
    ).json()
    assert [f["code"] for f in body["items"]] == ["watchdog_near_miss"]


def test_api_ingest_stats_count_faults_and_conflicts(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    ingest(_fault(events, "outbox_corrupt"))
    held = _fault(events, "reader_failure")
    ingest(held)
    ingest(Event(**{**held.__dict__, "event_id": "restored-from-backup"}))
    stats = client.get("/api/ingest/stats", headers=auth("mona")).json()
    assert stats["faults"] == {"outbox_corrupt": 1, "reader_failure": 1}
    assert stats["stored_events"]["conflict"] == 1


def test_api_ingest_conflicts_lists_the_seq_and_both_event_ids(
    client: TestClient, ingest: Ingest, events: EventFactory, auth: Headers
) -> None:
    held = _fault(events)
    ingest(held)
    ingest(Event(**{**held.__dict__, "event_id": "restored-from-backup"}))
    body = client.get("/api/ingest/conflicts", headers=auth("mona")).json()
    [conflict] = body["items"]
    assert conflict["machine_id"] == "laser"
    assert (conflict["controller_id"], conflict["outbox_id"], conflict["seq"]) == (
        "laser",
        held.outbox_id,
        held.seq,
    )
    assert (conflict["event_id"], conflict["held_event_id"]) == (
        "restored-from-backup",
        held.event_id,
    )
