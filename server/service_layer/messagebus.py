"""The message bus: runs a command's handler, then what must follow its commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.service_layer.commands import OutgoingMessage, PublishConfigs
from server.service_layer.handlers import HANDLERS
from server.service_layer.unit_of_work import UnitOfWorkFactory

logger = logging.getLogger(__name__)

Publish = Callable[[OutgoingMessage], None]


def _drop(message: OutgoingMessage) -> None:
    logger.debug("no MQTT link: not sending %s", message.topic)


class MessageBus:
    """Dispatches commands; after commit, republishes configs and sends queued messages."""

    def __init__(self, uow_factory: UnitOfWorkFactory, publish: Publish | None = None) -> None:
        self.uow_factory = uow_factory
        self.publish: Publish = publish or _drop
        # Called with each command once it is handled and committed (the live floor
        # listens); a listener must be quick and must not raise.
        self.listeners: list[Callable[[object], None]] = []

    def handle(self, cmd: object) -> Any:
        uow = self.uow_factory()
        with uow:
            result = HANDLERS[type(cmd)](cmd, uow)
        outgoing, dirty = list(uow.outgoing), set(uow.machines_to_publish)
        for message in outgoing:
            self.publish(message)
        if dirty:
            self.handle(PublishConfigs(frozenset(dirty)))
        for listener in self.listeners:
            listener(cmd)
        return result
