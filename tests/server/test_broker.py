"""The embedded amqtt broker of the demo, driven by the same paho-mqtt client as the rest."""

from __future__ import annotations

import queue
import socket
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from server.broker import BrokerStartError, EmbeddedBroker

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


class Client:
    """A paho client whose received messages land in a queue."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected: queue.Queue[object] = queue.Queue()
        self._subscribed: queue.Queue[int] = queue.Queue()
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.mqtt.on_connect = lambda _c, _u, _f, rc, _p: self._connected.put(rc)
        self.mqtt.on_subscribe = lambda _c, _u, mid, _rc, _p: self._subscribed.put(mid)
        self.mqtt.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.mqtt.connect(broker.host, broker.port, keepalive=30)
        self.mqtt.loop_start()
        reason = self._connected.get(timeout=TIMEOUT)
        assert not getattr(reason, "is_failure", True), reason

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _result, mid = self.mqtt.subscribe(topic, qos=qos)
        assert self._subscribed.get(timeout=TIMEOUT) == mid

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def client_factory(broker: EmbeddedBroker) -> Iterator[Callable[[], Client]]:
    clients: list[Client] = []

    def make() -> Client:
        client = Client(broker)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_embedded_broker_url_names_loopback_and_port(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.port > 0
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


def test_embedded_broker_delivers_qos1_publish_to_subscriber(
    client_factory: Callable[[], Client],
) -> None:
    topic = f"fablab/v1/test/{uuid.uuid4().hex[:8]}/events"
    subscriber, publisher = client_factory(), client_factory()
    subscriber.subscribe(topic, qos=1)

    publisher.publish(topic, b'{"seq":1}', qos=1)

    message = subscriber.messages.get(timeout=TIMEOUT)
    assert message.topic == topic
    assert message.payload == b'{"seq":1}'
    assert message.qos == 1


def test_embedded_broker_delivers_retained_message_to_late_subscriber(
    client_factory: Callable[[], Client],
) -> None:
    topic = f"fablab/v1/test/{uuid.uuid4().hex[:8]}/config"
    publisher = client_factory()
    publisher.publish(topic, b'{"version":7}', qos=1, retain=True)

    late = client_factory()
    late.subscribe(topic, qos=1)

    message = late.messages.get(timeout=TIMEOUT)
    assert message.payload == b'{"version":7}'
    assert message.retain


def test_embedded_broker_stop_closes_the_port() -> None:
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    broker.stop()

    assert not broker.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_embedded_broker_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerStartError):
            EmbeddedBroker(port=port, timeout=5).start()
