"""Charts for managers and the public open data (page, CSV, JSON)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from protocol import EventKind
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import billing_commands as bc
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


MONA = Principal("mona", frozenset({Role.MANAGER, Role.TREASURER}))


@pytest.fixture
def teaching(lab: ServerRuntime) -> ServerRuntime:
    """Teaching, credited by the hour: 90 minutes from ada, 30 from tom, approved by mona."""
    policy = lab.settings.billing_policy()
    lab.bus.handle(bc.AddContributionType("teaching", "Teaching", "hour", "money", 1000,
                                          actor=MONA))  # fmt: skip
    for member_id, minutes in (("ada", 90), ("tom", 30)):
        claim = lab.bus.handle(bc.SubmitClaim(member_id, "teaching", minutes, "a class",
                                              actor=Principal(member_id, frozenset())))  # fmt: skip
        lab.bus.handle(bc.DecideClaim(claim, True, "thanks", policy, actor=MONA))
    return lab


def test_open_data_publishes_contribution_hours_by_kind_and_month(
    teaching: ServerRuntime, browser: TestClient
) -> None:
    teaching.settings.open_data_min_members = 2
    [cell] = browser.get("/open-data.json").json()["contributions"]
    assert (cell["contribution_type_id"], cell["contribution_type"]) == ("teaching", "Teaching")
    assert (cell["hours"], cell["contributions"], cell["members"]) == (2.0, 2, 2)
    csv_text = browser.get("/open-data.csv?table=contributions").text
    assert csv_text.splitlines()[0] == ("month,contribution_type_id,contribution_type,hours,"
                                        "contributions,members,suppressed")  # fmt: skip
    assert ",teaching,Teaching,2.0,2,2,False" in csv_text
    assert "Teaching" in browser.get("/open-data").text


def test_open_data_suppresses_contributions_of_too_few_members(
    teaching: ServerRuntime, browser: TestClient
) -> None:
    teaching.settings.open_data_min_members = 3
    [cell] = browser.get("/open-data.json").json()["contributions"]
    assert cell["suppressed"] is True and cell["hours"] is None and cell["members"] is None
    assert ",teaching,Teaching,,,,True" in browser.get("/open-data.csv?table=contributions").text
