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
# Sends several messages; returns once the broker confirmed the retained ones (or the
# attempt failed), so that each is with the broker before the next batch.
PublishMany = Callable[[list[OutgoingMessage]], None]


def _drop(message: OutgoingMessage) -> None:
    logger.debug("no MQTT link: not sending %s", message.topic)


class MessageBus:
    """Dispatches commands; after commit, sends queued messages and republishes configs.

    A machine's configs are sent one at a time, each while the machine's row is locked
    (and, in this process, its lock held) and only if its version is still the latest
    committed: a publisher that got slow after its commit finds a newer version and
    sends nothing, so the last config the broker retains is the newest.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        publish: Publish | None = None,
        publish_many: PublishMany | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.publish: Publish = publish or _drop
        self._publish_many = publish_many
        self._config_locks: dict[str, threading.Lock] = {}
        self._config_locks_guard = threading.Lock()
        # Called with each command once it is handled and committed (the live floor
        # listens); a listener must be quick and must not raise.
        self.listeners: list[Callable[[object], None]] = []

    def sharing(self, uow_factory: UnitOfWorkFactory) -> MessageBus:
        """A bus whose units of work come from `uow_factory` (another connection pool),
        sharing this bus's listeners, per-machine config locks and publishers."""
        other = MessageBus(
            uow_factory,
            publish=lambda message: self.publish(message),
            publish_many=self._publish_many,
        )
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
        if len(configs) == 1:
            self.send_config(configs[0])
        elif configs:
            self.send_configs(configs)
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

    def send_configs(self, configs: list[ConfigMessage]) -> list[str]:
        """`send_config` for many machines at once: every lock taken in machine order,
        the rows locked in one transaction, the current ones sent together and
        confirmed by the broker before the locks are released; the machines sent."""
        ordered = sorted({c.machine_id: c for c in configs}.values(), key=lambda c: c.machine_id)
        locks = [self._config_lock(c.machine_id) for c in ordered]
        for lock in locks:  # in one order everywhere: no deadlock with another batch
            lock.acquire()
        try:
            uow = self.uow_factory()
            with uow:  # the rows stay locked until the broker has every config
                latest = uow.machines.lock_snapshot_versions([c.machine_id for c in ordered])
                current = [c for c in ordered if latest.get(c.machine_id) == c.version]
                self.publish_all([c.message for c in current])
                return [c.machine_id for c in current]
        finally:
            for lock in locks:
                lock.release()

    def publish_all(self, messages: list[OutgoingMessage]) -> None:
        """Send the messages; returns once the retained ones are with the broker."""
        if self._publish_many is not None:
            self._publish_many(messages)
            return
        for message in messages:
            self.publish(message)

    def _config_lock(self, machine_id: str) -> threading.Lock:
        with self._config_locks_guard:
            return self._config_locks.setdefault(machine_id, threading.Lock())
