"""Wiring of the server process: database, message bus, MQTT ingest."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from server.adapters.db import PoolSize, make_engine, make_session_factory
from server.adapters.mail import Mailer, make_mailer
from server.adapters.mqtt import (
    AuthWorker,
    IngestWorker,
    ServerMqttLink,
    dispatch_by_kind,
    ingest_subscriptions,
)
from server.api.ratelimit import LoginRateLimiter
from server.api.slots import RequestSlots
from server.api.token_cache import TokenCache
from server.config import Settings
from server.service_layer.access_index import AccessIndex
from server.service_layer.commands import OutgoingMessage
from server.service_layer.configs import SnapshotRefresher
from server.service_layer.floor_view import FloorView
from server.service_layer.messagebus import MessageBus
from server.service_layer.privacy import RetentionWorker
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


def _api_pool(settings: Settings) -> PoolSize:
    return PoolSize(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s)


class ServerRuntime:
    """Everything one server process runs; `start()` connects to the broker."""

    def __init__(self, settings: Settings, *, mqtt_enabled: bool = True) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, _api_pool(settings))
        self.session_factory = make_session_factory(self.engine)
        # Ingest and online checks on their own pool: API load never makes them wait.
        self.ingest_engine = make_engine(
            settings.database_url, PoolSize(settings.ingest_db_pool_size, overflow=0)
        )
        self.ingest_session_factory = make_session_factory(self.ingest_engine)
        self.login_limiter = LoginRateLimiter()
        # Online checks answer from memory while it is current; max age 0: always the database.
        self.access_index = (
            AccessIndex(max_age_s=settings.auth_index_max_age_s)
            if settings.auth_index_max_age_s > 0
            else None
        )
        self.bus = MessageBus(self.new_uow, publish=self._publish)
        self.ingest_bus = self.bus.sharing(self.new_ingest_uow)
        # The live floor read once for every request and page until a command changes it.
        self.floor = FloorView(
            self.new_uow,
            max_age_s=settings.floor_cache_max_age_s,
            missed_heartbeats=settings.controller_offline_after_missed_heartbeats,
        )
        self.bus.listeners.append(self.floor.invalidate)
        self.db_slots = RequestSlots(settings.db_request_slots)
        # One request reloads a stale floor; the others wait for it in the event loop.
        self.floor_readers = RequestSlots(1)
        self.token_cache = TokenCache(settings.api_token_cache_s)
        self.bus.listeners.append(self.token_cache.after_command)
        self.ingest = IngestWorker(
            self.ingest_bus, max_queue=settings.ingest_queue_size, limits=settings.plausibility()
        )
        self.auth_worker = AuthWorker(
            self.ingest_bus,
            per_controller=settings.auth_queue_per_controller,
            timeout_s=settings.auth_request_timeout_s,
        )
        # Invitations and password links are e-mailed only when SMTP is configured.
        self.mailer: Mailer | None = make_mailer(settings)
        self.link: ServerMqttLink | None = None
        self.retention: RetentionWorker | None = None
        self.snapshot_refresher: SnapshotRefresher | None = None
        if mqtt_enabled:
            # Only the server process purges: CLI runs and tests wire no background work.
            self.retention = RetentionWorker(self.bus, settings.raw_event_retention_days)
            self.snapshot_refresher = SnapshotRefresher(
                self.bus, settings.snapshot_refresh_interval_s
            )
            self.link = ServerMqttLink(
                settings.mqtt_url,
                client_id=settings.mqtt_client_id,
                subscriptions=ingest_subscriptions(settings.site, settings.mqtt_shared_group),
                on_message=dispatch_by_kind(self.ingest, self.auth_worker),
                on_connect=self.ingest.request_republish,
                username=settings.mqtt_username,
                password=settings.mqtt_password,
                retained_timeout_s=settings.config_publish_timeout_s,
            )

    def new_uow(self) -> SqlAlchemyUnitOfWork:
        return self._uow_on(self.session_factory)

    def new_ingest_uow(self) -> SqlAlchemyUnitOfWork:
        """A unit of work on the ingest pool (ingest and online checks)."""
        return self._uow_on(self.ingest_session_factory)

    def _uow_on(self, session_factory: Callable[[], Session]) -> SqlAlchemyUnitOfWork:
        # Both pools build the same snapshots and answer the same checks: same settings.
        return SqlAlchemyUnitOfWork(
            session_factory, self.login_limiter, self.settings.billing_policy(),
            plain_badges_allowed=self.settings.plain_badges_allowed,
            access_index=self.access_index,
        )

    def _publish(self, message: OutgoingMessage) -> None:
        if self.link is not None:
            self.link.publish(message)

    def start(self, *, wait: float | None = 5.0) -> None:
        self.ingest.start()
        self.auth_worker.start()
        if self.retention is not None:
            self.retention.start()
        if self.snapshot_refresher is not None:
            self.snapshot_refresher.start()
        if self.link is not None:
            self.link.start(wait=wait)

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.snapshot_refresher is not None:
            self.snapshot_refresher.stop()
        self.ingest.stop()
        self.auth_worker.stop()
        self.dispose()

    def dispose(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()
        self.ingest_engine.dispose()

    def __enter__(self) -> ServerRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
