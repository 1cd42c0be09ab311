"""Charts for managers and the public open data (page, CSV, JSON)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from protocol import EventKind
from server.bootstrap import ServerRuntime
from tests.server.conftest import EventFactory, Ingest
from tests.server.web.conftest import Login


def _session(
    ingest: Ingest, events: EventFactory, session_id: str, member: str, badge: str
) -> None:
    """A one-hour session that started an hour ago (the stats look at recent weeks)."""
    events.wall = time.time() - 3600
    ingest(events(EventKind.SESSION_STARTED, session_id=session_id, member_id=member,
                  badge_uid=badge, level="autonomous", snapshot_version=1))  # fmt: skip
    ingest(events(EventKind.SESSION_ENDED, session_id=session_id, reason="badge",
                  elapsed_seconds=3600.0, busy_seconds=1800.0))  # fmt: skip


def test_open_data_suppresses_a_week_used_by_one_member(
    lab: ServerRuntime, browser: TestClient, ingest: Ingest, events: EventFactory
) -> None:
    _session(ingest, events, "s1", "ada", "04A1B2C3")
    body = browser.get("/open-data.json").json()
    assert body["licence"]["id"] == "CC-BY-4.0"
    [cell] = body["cells"]
    assert cell["suppressed"] is True
    assert (cell["hours"], cell["sessions"], cell["members"]) == (None, None, None)
    assert "Ada" not in browser.get("/open-data.csv").text
    [trainings] = body["trainings_granted"]  # ada and tom on the laser: 2 < 3
    assert (trainings["training_type_id"], trainings["granted"]) == ("laser", None)


def test_open_data_publishes_a_week_used_by_enough_members(
    lab: ServerRuntime, browser: TestClient, ingest: Ingest, events: EventFactory
) -> None:
    lab.settings.open_data_min_members = 1
    _session(ingest, events, "s1", "ada", "04A1B2C3")
    [cell] = browser.get("/open-data.json").json()["cells"]
    assert (cell["machine"], cell["sessions"], cell["members"]) == ("Laser cutter", 1, 1)
    [trainings] = browser.get("/open-data.json").json()["trainings_granted"]
    assert trainings["granted"] == 2
    csv_text = browser.get("/open-data.csv").text
    assert csv_text.splitlines()[0].startswith("week,machine_id,machine,hours")
    assert "Creative Commons" in browser.get("/open-data").text


def test_stats_page_draws_svg_charts(
    lab: ServerRuntime, browser: TestClient, login: Login, ingest: Ingest, events: EventFactory
) -> None:
    _session(ingest, events, "s1", "ada", "04A1B2C3")
    login("mona")
    page = browser.get("/stats").text
    assert page.count("<svg") == 3
    assert 'class="bar-busy"' in page
