"""The embedded amqtt broker of the demo, driven by the same paho-mqtt client as the rest."""

from __future__ import annotations

import asyncio
import queue
import socket
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from server.broker import BrokerStartError, EmbeddedBroker, SubscriptionTable, _make_broker

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


def test_embedded_broker_sends_a_new_client_only_the_retained_messages_it_subscribes_to(
    client_factory: Callable[[], Client],
) -> None:
    """amqtt 0.12.1 sent a connecting client the retained messages matching *any*
    client's filter: every demo controller got the other machines' configs."""
    site = uuid.uuid4().hex[:8]
    server = client_factory()
    server.subscribe(f"fablab/v1/{site}/+/config", qos=1)  # a filter matching every machine
    for machine in ("cnc", "laser"):
        server.publish(f"fablab/v1/{site}/{machine}/config", machine.encode(), retain=True)

    laser = client_factory()
    laser.subscribe(f"fablab/v1/{site}/laser/config", qos=1)

    # Stray retained messages would come at connection, before the subscription's own.
    first = laser.messages.get(timeout=TIMEOUT)
    assert (first.topic, first.payload) == (f"fablab/v1/{site}/laser/config", b"laser")


def test_subscription_table_survives_a_subscription_added_while_iterating() -> None:
    """amqtt loops over its subscriptions with awaits inside; a client subscribing in
    between raised `dictionary changed size during iteration` (2 demo starts in 5)."""
    table = SubscriptionTable({"a/#": []})

    for _ in table:
        table["b/+"] = []
    for _filter, _subscribers in table.items():
        table["c/+"] = []

    assert set(table) == {"a/#", "b/+", "c/+"}


def test_embedded_broker_keeps_its_subscriptions_in_a_subscription_table() -> None:
    async def make() -> object:
        return _make_broker(EmbeddedBroker(port=1883)._config())._subscriptions

    assert isinstance(asyncio.run(make()), SubscriptionTable)
