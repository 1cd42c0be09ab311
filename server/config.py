"""The server's one Settings object; the only module that reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import BrokerAddress, check_segment


class Settings(BaseSettings):
    """Server configuration, from `FABLAB_*` environment variables or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix="FABLAB_", env_file=".env", extra="ignore")

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
    # -- web app ------------------------------------------------------------------------
    # The address members reach the server at, for links in e-mails (set-password links);
    # unset: the address the request came in on.
    public_url: str | None = None
    # Language of the pages when the browser asks for none we have (fr or en).
    default_locale: str = "en"
    currency: str = "EUR"
    # Open data: a cell (machine x week) with fewer distinct members than this is hidden.
    open_data_min_members: int = Field(default=3, ge=1)
    open_data_licence: str = "CC-BY-4.0"
    # One-time set-password links (invitations, forgotten passwords) expire after this.
    account_link_hours: int = Field(default=72, ge=1, le=24 * 30)
    # Outgoing e-mail (invitations, forgotten passwords): off unless smtp_host is set.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "fablab-monitor@localhost"
    smtp_starttls: bool = True

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_is_a_broker(cls, value: str) -> str:
        BrokerAddress.parse(value)  # ProtocolError is a ValueError: a clear settings error
        return value

    @field_validator("site")
    @classmethod
    def _site_is_slug(cls, value: str) -> str:
        return check_segment(value, "site")
