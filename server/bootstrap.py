"""Wiring of the server process: database, message bus, MQTT ingest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from server.adapters.db import PoolSize, exclusive_run, make_engine, make_session_factory
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
from server.service_layer.commands import OutgoingMessage, PublishConfigs
from server.service_layer.configs import SnapshotRefresher
from server.service_layer.floor_view import FloorView
from server.service_layer.messagebus import MessageBus
from server.service_layer.privacy import RetentionWorker
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


def _api_pool(settings: Settings) -> PoolSize:
    return PoolSize(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s)


def _ignore(_topic: str, _payload: bytes) -> None:
    """The publishing connection subscribes to nothing."""


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
        self.bus = MessageBus(
            self.new_uow,
            publish=self._publish,
            publish_many=self._publish_many if mqtt_enabled else None,
        )
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
        self.publisher: ServerMqttLink | None = None
        self.retention: RetentionWorker | None = None
        self.snapshot_refresher: SnapshotRefresher | None = None
        if mqtt_enabled:
            self._connect_mqtt(settings)

    def _connect_mqtt(self, settings: Settings) -> None:
        """The periodic workers and the two broker connections of a server process."""
        # Only the server process purges: CLI runs and tests wire no background work.
        # With several server processes, one at a time runs each periodic worker.
        exclusive = exclusive_run(self.engine)
        self.retention = RetentionWorker(
            self.bus, settings.raw_event_retention_days, exclusive=exclusive
        )
        self.snapshot_refresher = SnapshotRefresher(
            self.bus, settings.snapshot_refresh_interval_s, exclusive=exclusive
        )
        sites = "+" if settings.mqtt_all_sites else settings.site
        self.link = ServerMqttLink(
            settings.mqtt_url,
            client_id=settings.mqtt_client_id,
            subscriptions=ingest_subscriptions(sites, settings.mqtt_shared_group),
            # A shared group's members keep no session: a dead member's share would
            # wait for it; the controllers' outboxes resend what it had not acked.
            clean_session=settings.mqtt_shared_group is not None,
            on_message=dispatch_by_kind(self.ingest, self.auth_worker),
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            retained_timeout_s=settings.config_publish_timeout_s,
        )
        # Configs, acks and answers go out on a connection of their own: when the
        # ingest queue is full the ingest connection stops reading (back-pressure),
        # and a config waiting for the broker's PUBACK must not wait behind it.
        self.publisher = ServerMqttLink(
            settings.mqtt_url,
            client_id=f"{settings.mqtt_client_id}-out",
            subscriptions=[],
            clean_session=True,
            on_message=_ignore,
            on_connect=self._republish_in_background,
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
        if self.publisher is not None:
            self.publisher.publish(message)

    def _publish_many(self, messages: list[OutgoingMessage]) -> None:
        if self.publisher is not None:
            self.publisher.publish_many(messages)

    def _republish_in_background(self) -> None:
        """Every config again after (re)connecting (retained copies may be gone), on a
        thread of its own: neither the connection's thread nor ingest waits for it."""
        threading.Thread(target=self._republish, name="republish", daemon=True).start()

    def _republish(self) -> None:
        try:
            self.bus.handle(PublishConfigs())
        except Exception:
            logger.exception("republishing the configs failed; the periodic refresh retries")

    def start(self, *, wait: float | None = 5.0) -> None:
        self.ingest.start()
        self.auth_worker.start()
        if self.retention is not None:
            self.retention.start()
        if self.snapshot_refresher is not None:
            self.snapshot_refresher.start()
        if self.publisher is not None:
            self.publisher.start(wait=wait)
        if self.link is not None:
            self.link.start(wait=wait)

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        if self.publisher is not None:
            self.publisher.stop()
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
