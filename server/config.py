"""The server's one Settings object; the only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import BrokerAddress, check_segment

ENV_FILE_VARIABLE = "FABLAB_ENV_FILE"


class SettingsFileError(ValueError):
    """FABLAB_ENV_FILE names a file that cannot be read."""


class Settings(BaseSettings):
    """Server configuration, from `FABLAB_*` environment variables, else from the file that
    FABLAB_ENV_FILE names (/etc/fablab/server.env in deploy/), else from `./.env`."""

    model_config = SettingsConfigDict(env_prefix="FABLAB_", env_file=".env", extra="ignore")

    def __init__(self, **values: Any) -> None:
        env_file = os.environ.get(ENV_FILE_VARIABLE)
        if env_file and "_env_file" not in values:
            if not os.access(env_file, os.R_OK):
                raise SettingsFileError(
                    f"{ENV_FILE_VARIABLE}={env_file}: no such file, or not readable by this "
                    "user (run as the server's user, e.g. `sudo -u fablab`)"
                )
            values["_env_file"] = env_file
        super().__init__(**values)

    database_url: str = "sqlite:///./fablab-data/fablab.sqlite3"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_client_id: str = "fablab-server"
    # Set on every server process of a scaled-out deployment: ingest is spread over
    # them with an MQTT shared subscription ($share/<group>/...).
    mqtt_shared_group: str | None = None
    site: str = "lab"
    timezone: str = "Europe/Paris"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("./fablab-data")
    controller_offline_after_missed_heartbeats: int = 3
    # Send the session cookie over HTTPS only; off for plain-HTTP local use and the demo.
    secure_cookies: bool = False
    # Raw controller events older than this are purged (sessions and bills are kept).
    raw_event_retention_days: int = Field(default=365, ge=1)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_is_a_broker(cls, value: str) -> str:
        BrokerAddress.parse(value)  # ProtocolError is a ValueError: a clear settings error
        return value

    @field_validator("site")
    @classmethod
    def _site_is_slug(cls, value: str) -> str:
        return check_segment(value, "site")
