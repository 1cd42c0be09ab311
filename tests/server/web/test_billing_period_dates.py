"""A billing period's pages name its last day, not the excluded day after it."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import billing_commands as bc
from tests.server.web.conftest import Login

TESS = Principal("tess", frozenset({Role.TREASURER}))


def test_billing_period_dates_page_heading_ends_on_the_last_day_of_the_month(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = lab.bus.handle(bc.OpenPeriod(date(2025, 1, 1), lab.settings.billing_policy(),
                                          actor=TESS))  # fmt: skip
    login("tess")
    page = browser.get(f"/billing/periods/{period}").text
    assert "Billing period from Jan 1, 2025 to Jan 31, 2025" in page
