"""Wiring of the server process: database, message bus, MQTT ingest."""

from __future__ import annotations

import logging

from server.adapters.db import make_engine, make_session_factory
from server.adapters.mqtt import (
    IngestWorker,
    ServerMqttLink,
    dispatch_by_kind,
    ingest_subscriptions,
)
from server.api.ratelimit import LoginRateLimiter
from server.config import Settings
from server.service_layer.commands import OutgoingMessage
from server.service_layer.messagebus import MessageBus
from server.service_layer.privacy import RetentionWorker
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


class ServerRuntime:
    """Everything one server process runs; `start()` connects to the broker."""

    def __init__(self, settings: Settings, *, mqtt_enabled: bool = True) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.session_factory = make_session_factory(self.engine)
        self.login_limiter = LoginRateLimiter()
        self.bus = MessageBus(self.new_uow, publish=self._publish)
        self.ingest = IngestWorker(self.bus)
        self.auth_worker = IngestWorker(self.bus, name="auth")
        self.link: ServerMqttLink | None = None
        self.retention: RetentionWorker | None = None
        if mqtt_enabled:
            # Only the server process purges: CLI runs and tests wire no background work.
            self.retention = RetentionWorker(self.bus, settings.raw_event_retention_days)
            self.link = ServerMqttLink(
                settings.mqtt_url,
                client_id=settings.mqtt_client_id,
                subscriptions=ingest_subscriptions(settings.site, settings.mqtt_shared_group),
                on_message=dispatch_by_kind(self.ingest, self.auth_worker),
                on_connect=self.ingest.request_republish,
                username=settings.mqtt_username,
                password=settings.mqtt_password,
            )

    def new_uow(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.session_factory, self.login_limiter)

    def _publish(self, message: OutgoingMessage) -> None:
        if self.link is not None:
            self.link.publish(message)

    def start(self, *, wait: float | None = 5.0) -> None:
        self.ingest.start()
        self.auth_worker.start()
        if self.retention is not None:
            self.retention.start()
        if self.link is not None:
            self.link.start(wait=wait)

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        if self.retention is not None:
            self.retention.stop()
        self.ingest.stop()
        self.auth_worker.stop()
        self.engine.dispose()

    def __enter__(self) -> ServerRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
