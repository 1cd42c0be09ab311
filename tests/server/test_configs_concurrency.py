"""Concurrent config publishes for one machine: distinct versions, newest retained last."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from protocol import Level, PermissionSnapshot, badge_digest, config_topic, verify_config
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from server.service_layer import configs
from server.service_layer.commands import OutgoingMessage
from server.service_layer.handlers import HANDLERS
from tests.fixtures import MosquittoServer
from tests.server.conftest import KEY_HEX, SITE

KEY = bytes.fromhex(KEY_HEX)
TIMEOUT = 10.0
ADA, NORA = badge_digest(KEY, "04A1B2C3"), badge_digest(KEY, "04FFEE01")
TOPIC = config_topic(SITE, "laser")


def _in_thread(name: str, action: Callable[[], object], errors: list[BaseException]) -> Any:
    def run() -> None:
        try:
            action()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    return threading.Thread(target=run, name=name)


def _snapshots(sent: list[OutgoingMessage]) -> list[PermissionSnapshot]:
    return [verify_config(m.payload, KEY) for m in sent if m.topic == TOPIC]


def test_publish_configs_concurrent_changes_get_distinct_versions(
    lab: ServerRuntime, sent: list[OutgoingMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant and a revoke published at once, both reading the same previous version."""
    grant_built, revoke_built, grant_done = threading.Event(), threading.Event(), threading.Event()
    first_build: set[str] = set()
    real_build = configs.build_snapshot

    def build(**kwargs: Any) -> Any:
        built = real_build(**kwargs)
        name = threading.current_thread().name
        if name not in first_build:
            first_build.add(name)
            if name == "grant":  # built from the old version; wait until the revoke is too
                grant_built.set()
                revoke_built.wait(TIMEOUT)
            elif name == "revoke":  # built from the same old version; let the grant go first
                revoke_built.set()
                grant_done.wait(TIMEOUT)
        return built

    monkeypatch.setattr(configs, "build_snapshot", build)
    errors: list[BaseException] = []

    def grant() -> None:
        try:
            lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED))
        finally:
            grant_done.set()

    sent.clear()
    granting = _in_thread("grant", grant, errors)
    revoking = _in_thread(
        "revoke", lambda: lab.bus.handle(cmds.RevokeTraining("ada", "laser")), errors
    )
    granting.start()
    assert grant_built.wait(TIMEOUT)
    revoking.start()
    granting.join(TIMEOUT)
    revoking.join(TIMEOUT)
    assert not errors, errors

    by_version: dict[int, set[PermissionSnapshot]] = {}
    for snapshot in _snapshots(sent):
        by_version.setdefault(snapshot.version, set()).add(snapshot)
    assert all(len(bodies) == 1 for bodies in by_version.values()), by_version
    assert len(by_version) == 2
    newest = max(_snapshots(sent), key=lambda s: s.version)
    assert newest.lookup(NORA) is not None and newest.lookup(ADA) is None


class RetainedWatcher:
    """A stock MQTT client on the config topic: every message, in the broker's order."""

    def __init__(self, broker: MosquittoServer, *topics: str) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subscribed: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.on_message = lambda _c, _u, msg: self.received.put(
            (msg.topic, bytes(msg.payload))
        )
        self.client.on_subscribe = lambda _c, _u, mid, _rc, _p: self._subscribed.put(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        for topic in (TOPIC, *topics):
            _rc, mid = self.client.subscribe(topic, qos=1)
            assert self._subscribed.get(timeout=TIMEOUT) == mid

    def next_snapshot(self) -> PermissionSnapshot:
        topic, payload = self.received.get(timeout=TIMEOUT)
        assert topic == TOPIC
        return verify_config(payload, KEY)

    def snapshots_until(self, marker_topic: str) -> list[PermissionSnapshot]:
        """The configs received before the marker (sent last by the server's own client)."""
        snapshots = []
        while (item := self.received.get(timeout=TIMEOUT))[0] != marker_topic:
            snapshots.append(verify_config(item[1], KEY))
        return snapshots

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _clear_retained(broker: MosquittoServer) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(TOPIC, b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def live(lab: ServerRuntime, mosquitto: MosquittoServer) -> Iterator[ServerRuntime]:
    """A server process on the lab's database, connected to a real Mosquitto."""
    _clear_retained(mosquitto)
    watcher = RetainedWatcher(mosquitto)
    settings = Settings(
        database_url=lab.settings.database_url,
        mqtt_url=mosquitto.url,
        mqtt_client_id=f"server-{uuid.uuid4().hex[:8]}",
        site=SITE,
    )
    runtime = ServerRuntime(settings)
    runtime.start(wait=TIMEOUT)
    try:
        watcher.next_snapshot()  # the republish on connect is out: nothing else is pending
        yield runtime
    finally:
        watcher.close()
        runtime.stop()


def test_publish_configs_slower_publisher_never_overwrites_newer_retained(
    live: ServerRuntime, mosquitto: MosquittoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grant's version is committed, then a revoke commits and publishes a newer
    one before the grant's publisher gets to send: the broker must keep the newer."""
    real_publish = HANDLERS[cmds.PublishConfigs]
    errors: list[BaseException] = []
    revoking = _in_thread(
        "revoke", lambda: live.bus.handle(cmds.RevokeTraining("ada", "laser")), errors
    )

    def slow_grant_publisher(cmd: cmds.PublishConfigs, uow: Any) -> Any:
        result = real_publish(cmd, uow)
        if threading.current_thread().name == "grant" and not revoking.is_alive():
            revoking.start()  # the revoke runs to its end between our commit and our send
            revoking.join(TIMEOUT)
        return result

    monkeypatch.setitem(HANDLERS, cmds.PublishConfigs, slow_grant_publisher)
    marker = f"test/{uuid.uuid4().hex}/marker"
    watcher = RetainedWatcher(mosquitto, marker)
    try:
        watcher.next_snapshot()  # the retained one, from the connect
        granting = _in_thread(
            "grant",
            lambda: live.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED)),
            errors,
        )
        granting.start()
        granting.join(TIMEOUT)
        assert not errors, errors
        assert live.publisher is not None
        # Sent on the server's own connection after everything it published: once the
        # watcher has it, the broker has handled every config the server sent before.
        live.publisher.publish(OutgoingMessage(marker, b"end", qos=1))
        newest = max(watcher.snapshots_until(marker), key=lambda s: s.version)
    finally:
        watcher.close()
    assert newest.lookup(NORA) is not None and newest.lookup(ADA) is None
    fresh = RetainedWatcher(mosquitto)
    try:
        retained = fresh.next_snapshot()
    finally:
        fresh.close()
    assert retained.version == newest.version
    assert retained.lookup(ADA) is None


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_publish_configs_batch_rebuilds_a_machine_another_publisher_moved(
    lab: ServerRuntime, sent: list[OutgoingMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several machines are recorded in one transaction; one whose version another
    publisher committed meanwhile is built again on its own, with the newer state."""
    lab.bus.handle(cmds.AddMachine("zeta", "Zeta", SITE, key_hex=KEY_HEX))
    real_build = configs.build_snapshot
    interfered: list[bool] = []

    def build(**kwargs: Any) -> Any:
        if threading.current_thread().name == "MainThread" and not interfered:
            interfered.append(True)  # another process grants Nora on the laser meanwhile
            other = _in_thread("other", lambda: lab.bus.handle(
                cmds.GrantTraining("nora", "laser", Level.SUPERVISED)), errors)  # fmt: skip
            other.start()
            other.join(TIMEOUT)
        return real_build(**kwargs)

    errors: list[BaseException] = []
    monkeypatch.setattr(configs, "build_snapshot", build)
    sent.clear()
    published = lab.bus.handle(cmds.PublishConfigs(reissue_older_than_s=0))
    assert not errors, errors
    assert published == ["laser", "zeta"]
    by_version: dict[int, set[PermissionSnapshot]] = {}
    for snapshot in _snapshots(sent):
        by_version.setdefault(snapshot.version, set()).add(snapshot)
    assert all(len(bodies) == 1 for bodies in by_version.values()), by_version
    newest = max(_snapshots(sent), key=lambda s: s.version)
    assert newest.lookup(NORA) is not None
