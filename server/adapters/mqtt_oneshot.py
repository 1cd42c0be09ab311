"""One short MQTT connection that sends what an administrator's command produced (the
signed configs of the machines it changed), so that `fablab` in a shell reaches the
controllers as the API does, without the running server's connection."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import paho.mqtt.client as mqtt

from protocol import BrokerAddress, set_tcp_nodelay
from server.config import Settings
from server.service_layer.commands import OutgoingMessage


def publish_now(
    settings: Settings, messages: Sequence[OutgoingMessage], *, timeout: float = 5.0
) -> str | None:
    """Publish the messages (the last one per retained topic) and wait for the broker's
    acknowledgements; None when all were acknowledged, else why not (one line)."""
    latest: dict[str, OutgoingMessage] = {}
    others: list[OutgoingMessage] = []
    for message in messages:
        if message.retain:
            latest[message.topic] = message
        else:
            others.append(message)
    address = BrokerAddress.parse(settings.mqtt_url)
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        # Its own client id: the running server keeps its connection.
        client_id=f"{settings.mqtt_client_id}-admin-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if address.tls:
        client.tls_set()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    client.on_socket_open = set_tcp_nodelay
    client.on_connect = on_connect
    try:
        client.connect(address.host, address.port, keepalive=30)
    except OSError as exc:
        return f"broker {address.host}:{address.port} unreachable ({exc.strerror or exc})"
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return f"broker {address.host}:{address.port} did not answer"
        if refused:
            return f"broker refused the server's login ({refused[0]})"
        infos = [client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                 for m in [*latest.values(), *others]]
        for info in infos:
            info.wait_for_publish(timeout)
        if not all(info.is_published() for info in infos):
            return "the broker did not acknowledge every message in time"
        return None
    finally:
        client.disconnect()
        client.loop_stop()
