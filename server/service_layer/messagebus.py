"""The message bus: runs a command's handler, then what must follow its commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from server.adapters.metrics import SNAPSHOT_PUBLISH_SECONDS
from server.service_layer.commands import ConfigMessage, OutgoingMessage, PublishConfigs
from server.service_layer.handlers import HANDLERS
from server.service_layer.unit_of_work import UnitOfWorkFactory

logger = logging.getLogger(__name__)

# Returns once the message is sent; for a retained message (a config), once the broker
# has it or the attempt failed, so that configs sent in turn reach the broker in turn.
Publish = Callable[[OutgoingMessage], None]


def _drop(message: OutgoingMessage) -> None:
    logger.debug("no MQTT link: not sending %s", message.topic)


class MessageBus:
    """Dispatches commands; after commit, sends queued messages and republishes configs.

    A machine's configs are sent one at a time, each while the machine's row is locked
    (and, in this process, its lock held) and only if its version is still the latest
    committed: a publisher that got slow after its commit finds a newer version and
    sends nothing, so the last config the broker retains is the newest.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, publish: Publish | None = None) -> None:
        self.uow_factory = uow_factory
        self.publish: Publish = publish or _drop
        self._config_locks: dict[str, threading.Lock] = {}
        self._config_locks_guard = threading.Lock()
        # Called with each command once it is handled and committed (the live floor
        # listens); a listener must be quick and must not raise.
        self.listeners: list[Callable[[object], None]] = []

    def sharing(self, uow_factory: UnitOfWorkFactory) -> MessageBus:
        """A bus whose units of work come from `uow_factory` (another connection pool),
        sharing this bus's listeners, per-machine config locks and publisher."""
        other = MessageBus(uow_factory, publish=lambda message: self.publish(message))
        other.listeners = self.listeners
        other._config_locks = self._config_locks
        other._config_locks_guard = self._config_locks_guard
        return other

    def handle(self, cmd: object) -> Any:
        uow = self.uow_factory()
        with uow:
            result = HANDLERS[type(cmd)](cmd, uow)
        outgoing, configs = list(uow.outgoing), list(uow.configs)
        dirty = set(uow.machines_to_publish)
        for message in outgoing:
            self.publish(message)
        for config in configs:
            self.send_config(config)
        if dirty:
            self.handle(PublishConfigs(frozenset(dirty)))
        for listener in self.listeners:
            listener(cmd)
        return result

    def send_config(self, config: ConfigMessage) -> bool:
        """Send a committed config unless a newer version was committed since; True if sent."""
        with self._config_lock(config.machine_id):
            uow = self.uow_factory()
            with uow:  # leaving it ends the transaction: the row lock is held until then
                latest = uow.machines.lock_snapshot_version(config.machine_id)
                if latest != config.version:
                    logger.debug("config %s v%s superseded by v%s: not sent",
                                 config.machine_id, config.version, latest)  # fmt: skip
                    return False
                self.publish(config.message)
                if config.build_started is not None:
                    SNAPSHOT_PUBLISH_SECONDS.observe(time.perf_counter() - config.build_started)
                return True

    def _config_lock(self, machine_id: str) -> threading.Lock:
        with self._config_locks_guard:
            return self._config_locks.setdefault(machine_id, threading.Lock())
