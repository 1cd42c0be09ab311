"""The treasurer's journey in a real browser: open a period, compute, approve, download."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.adapters.orm import UsageSession
from tests.browser.conftest import BillingLab, LiveLab, NewPage, log_in

pytestmark = pytest.mark.browser

MARCH = datetime(2025, 3, 12, 9, tzinfo=UTC)  # before every seeded session


def _march_hour_of_ada(live: LiveLab) -> None:
    """One hour of Ada's on the laser in March 2025 (billed at 12.00 an hour)."""
    with live.uow() as uow:
        uow.sessions.add(
            UsageSession(
                id="march-ada", machine_id="laser", controller_id="laser", member_id="ada",
                reported_member_id="ada", started_at=MARCH,
                ended_at=MARCH + timedelta(hours=1), elapsed_seconds=3600.0, busy_seconds=0.0,
            )
        )  # fmt: skip
        uow.commit()


def test_browser_treasurer_approves_a_period_and_downloads_the_csv(
    live: LiveLab, billing: BillingLab, new_page: NewPage, tmp_path: Path
) -> None:
    _march_hour_of_ada(live)
    page = new_page()
    log_in(page, "tess", next_path="/billing")
    page.fill("#f-starts_on", "2025-03-01")
    page.click("text=Open the period")
    page.wait_for_url("**/billing/periods/*")
    page.click("text=Compute the statements")
    page.wait_for_selector("text=Ada Lovelace")
    page.click("text=Approve every statement and close the period")
    page.wait_for_selector("text=Compute the statements", state="detached")
    assert "€12.00" in page.inner_text("main")
    with page.expect_download() as info:
        page.click("text=Statements (CSV)")
    saved = tmp_path / "statements.csv"
    info.value.save_as(saved)
    text = saved.read_text()
    assert "march-ada" in text and "approved" in text
