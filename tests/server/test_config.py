"""Server settings refuse what cannot work, at start, with the setting named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol import TopicKind, shared_filter, subscription_filter
from server.bootstrap import ServerRuntime
from server.config import Settings


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://user:pw@broker:1883"])
def test_settings_refuse_an_unusable_broker_url(url: str) -> None:
    with pytest.raises(ValidationError, match="broker_url"):
        Settings(mqtt_url=url)


def test_settings_accept_a_tls_broker_url() -> None:
    assert Settings(mqtt_url="mqtts://broker.lab:8883").mqtt_url == "mqtts://broker.lab:8883"


def test_settings_refuse_request_slots_not_below_the_pool() -> None:
    with pytest.raises(ValidationError, match="FABLAB_DB_REQUEST_SLOTS"):
        Settings(db_pool_size=4, db_max_overflow=0, db_request_slots=4)


def test_settings_accept_request_slots_below_the_pool() -> None:
    assert Settings(db_pool_size=4, db_max_overflow=0, db_request_slots=3).db_request_slots == 3


def test_settings_refuse_a_shared_group_that_is_not_a_slug() -> None:
    with pytest.raises(ValidationError):
        Settings(mqtt_shared_group="in/gest")


def test_settings_ingest_every_site_through_a_shared_group(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        mqtt_shared_group="ingest",
        mqtt_all_sites=True,
    )
    runtime = ServerRuntime(settings)
    try:
        assert runtime.link is not None
        assert runtime.link.subscriptions == [
            shared_filter("ingest", subscription_filter(kind))
            for kind in (TopicKind.EVENTS, TopicKind.STATUS, TopicKind.AUTH_REQUEST)
        ]
        assert runtime.link.clean_session  # a dead member keeps no share of the events
    finally:
        runtime.stop()
