"""The MQTT link to the server, over paho-mqtt 2.x (MQTT 3.1.1 features only).

paho runs its network loop on its own thread and keeps reconnecting with backoff.
Its callbacks never touch the state machine: they only put LinkEvents on a queue
that the app's main loop drains.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from firmware_pi.logs import bind_controller
from protocol import (
    AuthRequest,
    BrokerAddress,
    ControllerState,
    ControllerStatus,
    Event,
    ProtocolError,
    TopicKind,
    ack_topic,
    auth_request_topic,
    auth_response_topic,
    command_topic,
    config_topic,
    events_topic,
    parse_topic,
    set_tcp_nodelay,
    status_topic,
)

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE = 1
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30


@dataclass(frozen=True)
class LinkUp:
    """Connected (or reconnected) to the broker, birth sent, subscriptions made."""


@dataclass(frozen=True)
class LinkDown:
    """The connection to the broker was lost."""

    reason: str


@dataclass(frozen=True)
class Incoming:
    """A message for this controller on one of its subscribed topics."""

    kind: TopicKind
    payload: bytes


LinkEvent = LinkUp | LinkDown | Incoming


class Link(Protocol):
    """What the app needs from a connection to the server."""

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def publish_event(self, event: Event) -> bool: ...

    def publish_auth_request(self, request: AuthRequest) -> bool: ...

    def publish_status(self) -> bool:
        """Re-announce `online` (retained): the server's liveness heartbeat when idle."""
        ...

    def drain(self) -> list[LinkEvent]: ...

    def stop(self, timeout: float = 2.0) -> None: ...


class MqttLink:
    """One controller's MQTT session: status birth / last will; config, ack, command and
    auth/response in; events and auth/request out."""

    def __init__(
        self,
        *,
        broker: BrokerAddress,
        controller_id: str,
        site: str,
        machine: str,
        firmware_version: str,
        boot_id: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self._controller_id = controller_id
        self._firmware_version = firmware_version
        self._boot_id = boot_id
        self._keepalive_s = keepalive_s
        self._wall_clock = wall_clock
        self._status_topic = status_topic(site, machine)
        self._events_topic = events_topic(site, machine)
        self._auth_request_topic = auth_request_topic(site, machine)
        self._subscriptions = {
            config_topic(site, machine): TopicKind.CONFIG,
            ack_topic(site, machine): TopicKind.ACK,
            command_topic(site, machine): TopicKind.COMMAND,
            auth_response_topic(site, machine): TopicKind.AUTH_RESPONSE,
        }
        self._inbox: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._started = False
        self._stopping = False

        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"fablab-pi-{controller_id}",
            protocol=mqtt.MQTTv311,
        )
        paho_log = logging.getLogger(f"{__name__}.paho.{controller_id}")
        paho_log.addFilter(self._drop_shutdown_noise)
        self._client.enable_logger(paho_log)
        if username is not None:
            self._client.username_pw_set(username, password)
        if broker.tls:
            self._client.tls_set(ca_certs=ca_file)  # None: the system's CA store
        self._client.reconnect_delay_set(
            min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S
        )
        self._client.on_socket_open = set_tcp_nodelay  # an online check must not wait for Nagle
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _status(self, state: ControllerState) -> bytes:
        return ControllerStatus(
            controller_id=self._controller_id,
            state=state,
            firmware_version=self._firmware_version,
            boot_id=self._boot_id,
            wall_time=self._wall_clock(),
        ).encode()

    def start(self) -> None:
        """Begin connecting in the background; retries until stop() if the broker is down."""
        self._client.will_set(
            self._status_topic,
            self._status(ControllerState.OFFLINE),
            qos=QOS_AT_LEAST_ONCE,
            retain=True,
        )
        self._client.connect_async(
            self.broker.host, self.broker.port, keepalive=self._keepalive_s
        )
        self._client.loop_start()
        self._started = True
        log.info("connecting to mqtt%s://%s:%d", "s" if self.broker.tls else "",
                 self.broker.host, self.broker.port)

    def publish_event(self, event: Event) -> bool:
        """Hand an event to the broker at QoS 1; False when not connected right now."""
        if not self.connected:
            return False
        info = self._client.publish(
            self._events_topic, event.encode(), qos=QOS_AT_LEAST_ONCE
        )
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def publish_status(self) -> bool:
        if not self.connected:
            return False
        info = self._client.publish(
            self._status_topic,
            self._status(ControllerState.ONLINE),
            qos=QOS_AT_LEAST_ONCE,
            retain=True,
        )
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def publish_auth_request(self, request: AuthRequest) -> bool:
        """Ask the server about a badge (QoS 1); False when not connected right now."""
        if not self.connected:
            return False
        info = self._client.publish(
            self._auth_request_topic, request.encode(), qos=QOS_AT_LEAST_ONCE
        )
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def drain(self) -> list[LinkEvent]:
        """Everything that happened on the link since the last drain, in order."""
        events: list[LinkEvent] = []
        while True:
            try:
                events.append(self._inbox.get_nowait())
            except queue.Empty:
                return events

    def stop(self, timeout: float = 2.0) -> None:
        """Say `offline` (a clean disconnect sends no last will), disconnect, stop the loop."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        if self.connected:
            info = self._client.publish(
                self._status_topic,
                self._status(ControllerState.OFFLINE),
                qos=QOS_AT_LEAST_ONCE,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def _drop_shutdown_noise(self, record: logging.LogRecord) -> bool:
        # paho 2.2's loop polls once more after our own clean disconnect and logs that
        # poll as an ERROR; after stop() began, that record says nothing.
        return not (self._stopping and record.getMessage().startswith("Client is not connected"))

    # -- paho callbacks (paho's thread: only queue things, never raise) ----------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        bind_controller(self._controller_id)  # paho's thread: its log lines say whose
        try:
            if reason_code.is_failure:
                log.warning("broker refused the connection: %s", reason_code)
                return
            client.subscribe([(topic, QOS_AT_LEAST_ONCE) for topic in self._subscriptions])
            client.publish(
                self._status_topic,
                self._status(ControllerState.ONLINE),
                qos=QOS_AT_LEAST_ONCE,
                retain=True,
            )
            self._connected.set()
            self._inbox.put(LinkUp())
            log.info("connected to the broker")
        except Exception:
            log.exception("error in on_connect")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        bind_controller(self._controller_id)
        try:
            if self._connected.is_set():
                self._connected.clear()
                self._inbox.put(LinkDown(str(reason_code)))
                level = logging.INFO if self._stopping else logging.WARNING
                log.log(level, "disconnected from the broker: %s", reason_code)
        except Exception:
            log.exception("error in on_disconnect")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        bind_controller(self._controller_id)
        try:
            kind = self._subscriptions.get(message.topic)
            if kind is None:
                address = parse_topic(message.topic)
                log.warning("ignoring message on unexpected topic %s", address)
                return
            self._inbox.put(Incoming(kind, bytes(message.payload)))
        except ProtocolError as exc:
            log.warning("ignoring message on unexpected topic: %s", exc)
        except Exception:
            log.exception("error in on_message")
