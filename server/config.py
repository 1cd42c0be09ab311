"""The server's one Settings object; the only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import BrokerAddress, check_segment
from server.domain.billing.policy import BillingPolicy
from server.domain.ingest_rules import Plausibility

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
    # Ingest the controllers of every site on the broker, not only `site`'s: one set of
    # server processes serving a network of labs.
    mqtt_all_sites: bool = False
    site: str = "lab"
    timezone: str = "Europe/Paris"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("./fablab-data")
    controller_offline_after_missed_heartbeats: int = 3
    # Send the session cookie over HTTPS only; off for plain-HTTP local use and the demo.
    secure_cookies: bool = False
    # Addresses of the reverse proxies whose X-Forwarded-For / -Proto headers are believed
    # (e.g. ["127.0.0.1"] behind a local nginx); by default no one's: the peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Largest request body accepted (bytes); the CSV import has its own 2 MB bound.
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Raw controller events older than this are purged (sessions and bills are kept).
    raw_event_retention_days: int = Field(default=365, ge=1)
    # No snapshot the server publishes gets older than this (it reissues them with a new
    # version and a fresh issued_at): keep it well below the controllers'
    # snapshot_max_age_s, at most a quarter of it (docs/operations.md).
    snapshot_refresh_interval_s: int = Field(default=3600, ge=60)
    # Badges without the anti-cloning sector (plain: UID only) may open machines; set
    # false once every badge is protected (docs/security.md).
    plain_badges_allowed: bool = True
    # How long the server waits for the broker to confirm a retained config.
    config_publish_timeout_s: float = Field(default=5.0, gt=0)
    # An event whose wall time lies outside this window around the server's clock is
    # stored as rejected (a controller's clock far off, or a forged time). The past is
    # wide: events wait in a controller's outbox while it is offline.
    event_max_ahead_s: int = Field(default=3600, ge=0)
    event_max_behind_days: int = Field(default=366, ge=1)
    # How much a reported elapsed/busy time may exceed the session's real span.
    event_duration_tolerance_s: float = Field(default=30.0, ge=0)
    # Messages waiting for ingest; when full, the MQTT client stops reading, so the
    # broker keeps the QoS 1 messages (nothing is dropped).
    ingest_queue_size: int = Field(default=1000, ge=1)
    # Online badge checks waiting per controller (older ones are dropped first), and how
    # long a controller waits for the answer (an older request is not answered).
    auth_queue_per_controller: int = Field(default=20, ge=1)
    auth_request_timeout_s: float = Field(default=1.5, gt=0)
    # Online checks answer from memory; a change made by this process is seen by the
    # next check, one made by another process (the CLI, a second server) within this
    # many seconds. 0: every check reads the database.
    auth_index_max_age_s: float = Field(default=2.0, ge=0)
    # -- the API under load (docs/operations.md) ------------------------------------------
    # Worker threads running the synchronous routes and page handlers.
    http_threads: int = Field(default=40, ge=1)
    # The API's connection pool (ingest and online checks have their own engine).
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # How long a request waits for a pooled connection before it gets a 503.
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    # Requests holding a database session at once; the others wait without a thread.
    # Kept below the pool's size so that a request holding a session always finds a
    # connection for the command it hands to the bus: the thread pool and the
    # connection pool can then never wait on each other.
    db_request_slots: int = Field(default=8, ge=1)
    # The pool of ingest and online checks (their own engine: API load never starves them).
    ingest_db_pool_size: int = Field(default=4, ge=1)
    # The live floor is read once and shared by every request until a command changes it
    # or it is this old (another server process may have changed it).
    floor_cache_max_age_s: float = Field(default=2.0, gt=0)
    # A valid bearer token is looked up again after this long (0: on every request). A
    # token revoked, or a role changed, through this process applies at once; through
    # another server process or the CLI, within this time.
    api_token_cache_s: float = Field(default=1.0, ge=0, le=60)
    # Who may read /metrics: with a token, `Authorization: Bearer <token>` from anywhere;
    # without one, clients on the loopback interface only.
    metrics_token: str | None = Field(default=None, min_length=16)
    # -- web app ------------------------------------------------------------------------
    # The address members reach the server at, for links in e-mails (set-password links);
    # unset: the address the request came in on.
    public_url: str | None = None
    # Language of the pages when the browser asks for none we have (fr or en).
    default_locale: str = "en"
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

    @model_validator(mode="after")
    def _request_slots_leave_a_connection(self) -> Settings:
        connections = self.db_pool_size + self.db_max_overflow
        if self.db_request_slots >= connections:
            raise ValueError(
                f"FABLAB_DB_REQUEST_SLOTS ({self.db_request_slots}) must be below "
                f"FABLAB_DB_POOL_SIZE + FABLAB_DB_MAX_OVERFLOW ({connections})"
            )
        return self

    @field_validator("mqtt_shared_group")
    @classmethod
    def _group_is_slug(cls, value: str | None) -> str | None:
        return None if value is None else check_segment(value, "mqtt_shared_group")

    @field_validator("site")
    @classmethod
    def _site_is_slug(cls, value: str) -> str:
        return check_segment(value, "site")

    def plausibility(self) -> Plausibility:
        """The ingest bounds on wall times and durations, from these settings."""
        return Plausibility(
            max_ahead_s=float(self.event_max_ahead_s),
            max_behind_s=self.event_max_behind_days * 86400.0,
            duration_tolerance_s=self.event_duration_tolerance_s,
        )
