"""The server's one Settings object; the only module that reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import BrokerAddress, check_segment
from server.domain.billing.policy import BillingPolicy


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
    # Billing: amounts are in this currency (ISO 4217), periods in `timezone`.
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    billing_credit_cap_percent: int = Field(default=100, ge=0, le=100)
    billing_credit_cents_per_minute: int = Field(default=10, ge=0)
    billing_credit_expiry_months: int | None = Field(default=None, ge=1, le=120)
    billing_volunteer_cents_per_hour: int | None = Field(default=None, ge=0)

    def billing_policy(self) -> BillingPolicy:
        """The billing rules these settings give."""
        return BillingPolicy(
            timezone=self.timezone,
            currency=self.currency,
            credit_cap_percent=self.billing_credit_cap_percent,
            credit_cents_per_minute=self.billing_credit_cents_per_minute,
            credit_expiry_months=self.billing_credit_expiry_months,
            volunteer_cents_per_hour=self.billing_volunteer_cents_per_hour,
        )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_is_a_broker(cls, value: str) -> str:
        BrokerAddress.parse(value)  # ProtocolError is a ValueError: a clear settings error
        return value

    @field_validator("site")
    @classmethod
    def _site_is_slug(cls, value: str) -> str:
        return check_segment(value, "site")
