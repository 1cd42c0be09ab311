"""Server settings refuse what cannot work, at start, with the setting named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

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
