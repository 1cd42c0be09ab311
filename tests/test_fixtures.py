"""The integration fixtures themselves: a real Mosquitto and a real PostgreSQL."""

from __future__ import annotations

import queue
import socket
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.fixtures import MosquittoServer, free_port, wait_for_port
from tests.fixtures.postgres import libpq_url, with_database

TIMEOUT = 10.0


def _roundtrip(broker: MosquittoServer, *, retain: bool = False) -> bytes:
    """Publish one QoS 1 message and read it back through a subscription."""
    received: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"fixture-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.on_message = lambda _c, _u, msg: received.put(bytes(msg.payload))
    client.on_subscribe = lambda _c, _u, mid, _rc, _p: subscribed.put(mid)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        topic = f"fablab/v1/fixture/{uuid.uuid4().hex[:8]}/status"
        payload = uuid.uuid4().bytes
        if retain:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(TIMEOUT)
        _rc, mid = client.subscribe(topic, qos=1)
        assert subscribed.get(timeout=TIMEOUT) == mid
        if not retain:
            client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
        got = received.get(timeout=TIMEOUT)
        assert got == payload
        return got
    finally:
        client.disconnect()
        client.loop_stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_port_gives_up_on_a_closed_port() -> None:
    assert not wait_for_port("127.0.0.1", free_port(), timeout=0.3)


def test_mosquitto_fixture_relays_a_qos1_message(mosquitto: MosquittoServer) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    _roundtrip(mosquitto)


def test_mosquitto_fixture_restarts_on_the_same_port(mosquitto: MosquittoServer) -> None:
    port = mosquitto.port
    mosquitto.stop()
    assert not mosquitto.running
    assert not wait_for_port(mosquitto.host, port, timeout=0.2)

    mosquitto.start()

    assert mosquitto.port == port
    _roundtrip(mosquitto)


def test_mosquitto_factory_persistence_keeps_retained_across_restart(
    mosquitto_factory: Callable[..., MosquittoServer],
) -> None:
    broker = mosquitto_factory(persistence=True)
    received: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    client.on_message = lambda _c, _u, msg: received.put(bytes(msg.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish("fablab/v1/fixture/m1/config", b"v1", qos=1, retain=True).wait_for_publish(
        TIMEOUT
    )
    client.disconnect()
    client.loop_stop()

    broker.stop()
    broker.start()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    client.on_message = lambda _c, _u, msg: received.put(bytes(msg.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("fablab/v1/fixture/m1/config", qos=1)
        assert received.get(timeout=TIMEOUT) == b"v1"
    finally:
        client.disconnect()
        client.loop_stop()


def test_postgres_fixture_answers_select_1(postgres_url: str) -> None:
    import psycopg

    assert postgres_url.startswith("postgresql+psycopg://")
    with psycopg.connect(libpq_url(postgres_url)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_postgres_fixture_works_through_sqlalchemy(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_database()")).scalar_one()
    finally:
        engine.dispose()


def test_fresh_postgres_url_is_an_empty_database_of_its_own(
    postgres_url: str, fresh_postgres_url: str
) -> None:
    import psycopg

    assert fresh_postgres_url != postgres_url
    assert fresh_postgres_url == with_database(postgres_url, fresh_postgres_url.rsplit("/", 1)[1])
    with psycopg.connect(libpq_url(fresh_postgres_url)) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)


@pytest.mark.parametrize("spelling", ["postgresql+psycopg://u:p@h:1/db", "postgresql://u:p@h:1/db"])
def test_libpq_url_drops_the_sqlalchemy_driver(spelling: str) -> None:
    assert libpq_url(spelling) == "postgresql://u:p@h:1/db"
