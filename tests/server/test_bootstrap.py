"""The server's wiring: both database pools see the lab's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.bootstrap import ServerRuntime
from server.config import Settings


@pytest.fixture
def strict_lab(tmp_path: Path) -> ServerRuntime:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'lab.sqlite3'}",
        plain_badges_allowed=False,
        timezone="America/Montreal",
    )
    return ServerRuntime(settings, mqtt_enabled=False)


def test_bootstrap_ingest_units_of_work_carry_the_sites_badge_rule(
    strict_lab: ServerRuntime,
) -> None:
    # Snapshots republished after ingest must not re-allow plain badges.
    assert strict_lab.new_ingest_uow().plain_badges_allowed is False


def test_bootstrap_ingest_units_of_work_price_with_the_labs_policy(
    strict_lab: ServerRuntime,
) -> None:
    assert strict_lab.new_ingest_uow().billing_policy == strict_lab.settings.billing_policy()


def test_bootstrap_online_checks_use_the_processs_access_index(strict_lab: ServerRuntime) -> None:
    assert strict_lab.access_index is not None
    assert strict_lab.new_ingest_uow().access_index is strict_lab.access_index
