"""deploy/mosquitto/acl on a real Mosquitto: each controller reaches only its own machine."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from protocol import (
    Ack,
    EndReason,
    Event,
    EventKind,
    Level,
    TopicKind,
    ack_topic,
    config_topic,
    events_topic,
    shared_filter,
    status_topic,
    subscription_filter,
)
from server.adapters.migrations import upgrade
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from tests.fixtures import MosquittoServer

ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
PASSWORDS = {
    "fablab-server": "server-secret",
    "ctl-laser-1": "laser-secret",
    "ctl-cnc-1": "cnc-secret",
}
TIMEOUT = 10.0
QUIET = 0.5  # how long "nothing arrives" is watched for


class Client:
    def __init__(self, broker: MosquittoServer, user: str | None, password: str | None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected: queue.Queue[bool] = queue.Queue()
        self.granted: queue.Queue[list[int]] = queue.Queue()
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user or 'anon'}-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if user is not None:
            self.mqtt.username_pw_set(user, password)
        self.mqtt.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(not rc.is_failure)
        self.mqtt.on_subscribe = lambda _c, _u, _m, rcs, _p: self.granted.put(
            [rc.value for rc in rcs]
        )
        self.mqtt.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.mqtt.connect(broker.host, broker.port)
        self.mqtt.loop_start()

    def subscribe(self, topic: str) -> int:
        self.mqtt.subscribe(topic, qos=1)
        return self.granted.get(timeout=TIMEOUT)[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.mqtt.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)

    def received(self, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=0.05)
            except queue.Empty:
                if got:
                    break
                continue
            got.append((msg.topic, bytes(msg.payload)))
        return got

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture(scope="module")
def acl_broker(
    mosquitto_factory: Callable[..., MosquittoServer], tmp_path_factory: pytest.TempPathFactory
) -> MosquittoServer:
    passwd_tool = shutil.which("mosquitto_passwd")
    if passwd_tool is None:
        pytest.fail("mosquitto_passwd not found: it comes with the `mosquitto` package")
    passwd = tmp_path_factory.mktemp("acl") / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        args = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *args, "-b", str(passwd), user, password], check=True)
    extra = [f"password_file {passwd}", f"acl_file {ACL}"]
    if os.geteuid() == 0:
        extra.append("user root")  # else it reads the files as `mosquitto`, who cannot
    return mosquitto_factory(anonymous=False, extra_config=extra)


@pytest.fixture
def connect(acl_broker: MosquittoServer) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(user: str | None, password: str | None = None) -> Client:
        client = Client(acl_broker, user, password if password else PASSWORDS.get(user or ""))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_acl_refuses_anonymous_and_wrong_password(connect: Callable[..., Client]) -> None:
    assert connect(None).connected.get(timeout=TIMEOUT) is False
    assert connect("ctl-laser-1", "wrong").connected.get(timeout=TIMEOUT) is False


def test_acl_controller_publishes_own_events_to_server(connect: Callable[..., Client]) -> None:
    server = connect("fablab-server")
    assert server.connected.get(timeout=TIMEOUT)
    assert server.subscribe(subscription_filter(TopicKind.EVENTS)) == 1
    laser = connect("ctl-laser-1")
    assert laser.connected.get(timeout=TIMEOUT)

    laser.publish(events_topic("lab", "cnc-1"), b"forged")
    laser.publish(events_topic("lab", "laser-1"), b"genuine")

    assert server.received() == [(events_topic("lab", "laser-1"), b"genuine")]


def test_acl_controller_reads_only_its_own_config(connect: Callable[..., Client]) -> None:
    server = connect("fablab-server")
    assert server.connected.get(timeout=TIMEOUT)
    server.publish(config_topic("lab", "laser-1"), b"laser config", retain=True)
    server.publish(config_topic("lab", "cnc-1"), b"cnc config", retain=True)
    laser = connect("ctl-laser-1")
    assert laser.connected.get(timeout=TIMEOUT)

    assert laser.subscribe(config_topic("lab", "laser-1")) == 1
    assert laser.received() == [(config_topic("lab", "laser-1"), b"laser config")]
    # Mosquitto grants the SUBACK but delivers nothing the ACL does not let it read.
    laser.subscribe(config_topic("lab", "cnc-1"))
    assert laser.received(QUIET) == []


def test_acl_controller_cannot_write_its_config_nor_read_events(
    connect: Callable[..., Client],
) -> None:
    laser = connect("ctl-laser-1")
    assert laser.connected.get(timeout=TIMEOUT)
    laser.subscribe(subscription_filter(TopicKind.EVENTS))
    server = connect("fablab-server")
    assert server.connected.get(timeout=TIMEOUT)
    assert server.subscribe(config_topic("lab", "laser-1")) == 1
    assert server.subscribe(status_topic("lab", "laser-1")) == 1
    server.received(QUIET)  # retained copies, if any

    laser.publish(config_topic("lab", "laser-1"), b"self-granted")
    laser.publish(status_topic("lab", "laser-1"), b"online")
    server.publish(events_topic("lab", "cnc-1"), b"someone else's event")
    laser.publish(events_topic("lab", "laser-1"), b"own event")

    assert server.received() == [(status_topic("lab", "laser-1"), b"online")]
    assert laser.received(QUIET) == []


def test_acl_server_ingests_through_a_shared_subscription(connect: Callable[..., Client]) -> None:
    server = connect("fablab-server")
    assert server.connected.get(timeout=TIMEOUT)
    assert server.subscribe(shared_filter("ingest", subscription_filter(TopicKind.EVENTS))) == 1
    laser = connect("ctl-laser-1")
    assert laser.connected.get(timeout=TIMEOUT)

    laser.publish(events_topic("lab", "laser-1"), b"shared")

    assert server.received() == [(events_topic("lab", "laser-1"), b"shared")]


def _event(controller: str, kind: EventKind, **data: object) -> Event:
    return Event(
        event_id=uuid.uuid4().hex,
        controller_id=controller,
        outbox_id=f"outbox-{controller}",
        seq=1,
        boot_id="boot-1",
        wall_time=time.time() - 60.0,
        mono_time=100.0,
        kind=kind,
        data=dict(data),
    )


@pytest.fixture
def acl_server(acl_broker: MosquittoServer, tmp_path: Path) -> Iterator[ServerRuntime]:
    """The server, logged in as fablab-server, with machines laser-1 and cnc-1."""
    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        mqtt_url=acl_broker.url,
        mqtt_username="fablab-server",
        mqtt_password=PASSWORDS["fablab-server"],
        mqtt_client_id=f"server-{uuid.uuid4().hex[:6]}",
        site="lab",
    )
    runtime = ServerRuntime(settings)
    for machine in ("laser-1", "cnc-1"):
        runtime.bus.handle(cmds.AddMachine(machine, machine, "lab", controller_id=f"ctl-{machine}"))
    runtime.bus.handle(cmds.AddMember("Ada", member_id="ada"))
    runtime.start(wait=TIMEOUT)
    yield runtime
    runtime.stop()


def _acks(client: Client, machine: str) -> list[Ack]:
    return [Ack.decode(p) for t, p in client.received() if t == ack_topic("lab", machine)]


def test_acl_controller_cannot_rewrite_another_machines_session(
    connect: Callable[..., Client], acl_server: ServerRuntime
) -> None:
    laser, cnc = connect("ctl-laser-1"), connect("ctl-cnc-1")
    assert laser.connected.get(timeout=TIMEOUT) and cnc.connected.get(timeout=TIMEOUT)
    assert laser.subscribe(ack_topic("lab", "laser-1")) == 1
    assert cnc.subscribe(ack_topic("lab", "cnc-1")) == 1
    start = _event(
        "ctl-laser-1", EventKind.SESSION_STARTED, session_id="s-laser", badge_uid="04A1B2C3",
        member_id="ada", level=Level.AUTONOMOUS.value, snapshot_version=1,
    )  # fmt: skip
    laser.publish(events_topic("lab", "laser-1"), start.encode())
    assert [a.up_to_seq for a in _acks(laser, "laser-1")] == [1]

    # Through the ACL, on its own machine's topic, with its own controller id:
    forged_end = _event(
        "ctl-cnc-1", EventKind.SESSION_ENDED, session_id="s-laser",
        reason=EndReason.BADGE.value, elapsed_seconds=1.0, busy_seconds=0.0,
    )  # fmt: skip
    cnc.publish(events_topic("lab", "cnc-1"), forged_end.encode())

    [ack] = _acks(cnc, "cnc-1")
    assert (ack.up_to_seq, ack.rejected) == (1, (1,))
    with acl_server.new_uow() as uow:
        usage = uow.sessions.get("s-laser")
        assert usage is not None
        assert (usage.machine_id, usage.ended_at, usage.end_reason) == ("laser-1", None, None)
