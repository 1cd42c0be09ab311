"""An embedded MQTT 3.1.1 broker (amqtt) for the one-command demo.

Production uses Mosquitto (see ``deploy/mosquitto``). The demo starts this broker in a
thread of its own, with its own asyncio event loop, bound to 127.0.0.1 so that nothing
outside the machine can reach it; anonymous clients are allowed.

    with EmbeddedBroker() as broker:      # port=0: a free local port is chosen
        connect_to(broker.url)            # "mqtt://127.0.0.1:<port>"
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

# amqtt logs every connection and packet at INFO; keep it (and its state machine
# library) at WARNING unless the application configured them explicitly.
_NOISY_LOGGERS = ("amqtt", "transitions")

_BIND_ATTEMPTS = 5


class BrokerStartError(RuntimeError):
    """The embedded broker could not start (port taken, amqtt failure, timeout)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _quiet_amqtt_logs() -> None:
    for name in _NOISY_LOGGERS:
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.WARNING)


def _is_address_in_use(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class EmbeddedBroker:
    """amqtt broker running in a background thread; `start()` returns once it accepts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0) -> None:
        self._host = host
        self._requested_port = port
        self._port = port
        self._timeout = timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (meaningful once started)."""
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self) -> None:
        """Start the broker and block until it accepts TCP connections."""
        if self._thread is not None:
            raise BrokerStartError("embedded broker already started")
        _quiet_amqtt_logs()
        attempts = _BIND_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or _free_port(self._host)
            try:
                self._start_once()
            except BrokerStartError as exc:
                if attempt < attempts and _is_address_in_use(exc):
                    logger.debug("port %d taken meanwhile, trying another", self._port)
                    continue
                raise
            logger.info("embedded MQTT broker listening on %s", self.url)
            return

    def stop(self) -> None:
        """Disconnect every client, close the listener and end the broker thread."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed in between
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(self._timeout + 10.0)
        if thread.is_alive():
            logger.warning("embedded MQTT broker thread did not end in time")
        else:
            logger.info("embedded MQTT broker on %s stopped", self.url)
        self._thread = None
        self._loop = None
        self._stop_event = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------

    def _start_once(self) -> None:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-broker-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self._timeout):
            self.stop()
            raise BrokerStartError(f"embedded broker did not start within {self._timeout} s")
        if self._error is not None:
            error = self._error
            self._thread.join(self._timeout)
            self._thread = None
            raise BrokerStartError(f"embedded broker failed to start: {error}") from error
        # amqtt's start() returns once asyncio.start_server() is listening: connections
        # are accepted from here on. (No probe connection: amqtt logs those as errors.)

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self._host}:{self._port}"},
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._log_loop_error)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                logger.exception("embedded MQTT broker crashed")
        finally:
            try:
                _cancel_leftover_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _log_loop_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One line, not a traceback: a client dropping mid-handshake is not a crash.

        amqtt leaves such connection tasks unretrieved; while stopping they are expected.
        """
        stopping = self._stop_event is not None and self._stop_event.is_set()
        exc = context.get("exception")
        logger.log(
            logging.DEBUG if stopping else logging.WARNING,
            "embedded broker: %s%s",
            context.get("message", "error"),
            f" ({exc!r})" if exc else "",
        )

    async def _serve(self) -> None:
        # amqtt's Broker must be created inside the running loop it will serve on.
        self._stop_event = asyncio.Event()
        broker = _make_broker(self._config())
        await broker.start()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await broker.shutdown()


class SubscriptionTable(dict[str, Any]):
    """amqtt's table of subscriptions (topic filter -> subscribers), iterated over a
    snapshot: amqtt loops over it with awaits inside (sending retained messages on a
    connection, broadcasting a message), and a client subscribing meanwhile changed its
    size under the loop (`RuntimeError: dictionary changed size during iteration`,
    which dropped that client's connection handling)."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


def _make_broker(config: dict[str, Any]) -> Any:
    """amqtt's Broker with two fixes for amqtt 0.12.1 (see the methods)."""
    from amqtt.broker import Broker

    class _Broker(Broker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._subscriptions: dict[str, Any] = SubscriptionTable(self._subscriptions)

        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            """Only for a filter the session itself subscribes to. On each connection
            amqtt calls this for *every* client's filter (`for topic in
            self._subscriptions`), so a controller got the retained config and status of
            every other machine (the server's `fablab/v1/+/+/…` filters matched them)."""
            holders = self._subscriptions.get(subscription[0], ())
            if any(held.client_id == session.client_id for held, _qos in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return _Broker(config)


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
