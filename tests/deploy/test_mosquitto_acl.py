"""The broker files made by `fablab mosquitto-config`, on a real Mosquitto with TLS.

Controllers are registered and given credentials through the `fablab` CLI, the lab CA
and the broker's certificate come from `fablab tls-ca` / `fablab tls-cert`, and the
broker runs the generated fablab.conf (listeners, TLS, password file, ACL) as is.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from typer.testing import CliRunner

from protocol import (
    Ack,
    EndReason,
    Event,
    EventKind,
    Level,
    TopicKind,
    ack_topic,
    command_topic,
    config_topic,
    events_topic,
    shared_filter,
    status_topic,
    subscription_filter,
)
from server.bootstrap import ServerRuntime
from server.cli import app
from server.config import Settings
from server.service_layer import commands as cmds
from tests.fixtures import MosquittoServer, free_port

SITE = "lab"
SERVER_USER, SERVER_PASSWORD = "fablab-server", "server-secret-for-tests"
SERVER_CLIENT_ID = "fablab-server"
TIMEOUT = 10.0
QUIET = 0.5  # how long "nothing arrives" is watched for


@dataclass
class Lab:
    """A registered lab and its broker, run from the generated files."""

    cli: CliRunner
    root: Path
    out: Path
    ca_cert: Path
    server_port: int
    tls_port: int
    broker: MosquittoServer = field(init=False)
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)  # machine -> login

    def run(self, *args: str) -> str:
        result = self.cli.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    def issue(self, machine: str) -> tuple[str, str]:
        """New credentials for the machine's controller, as the controller.toml has them."""
        config = tomllib.loads(self.run("controller-credentials", machine, "--broker",
                                        f"mqtts://127.0.0.1:{self.tls_port}"))
        self.logins[machine] = (config["username"], config["password"])
        return self.logins[machine]

    def regenerate(self) -> None:
        self.run("mosquitto-config", "--out", str(self.out), "--certs", str(self.out / "certs"),
                 "--server-listener", f"127.0.0.1:{self.server_port}",
                 "--controller-port", str(self.tls_port))


class Client:
    """A paho client that records CONNACKs, disconnects, SUBACKs and messages."""

    def __init__(
        self,
        lab: Lab,
        login: tuple[str, str] | None,
        *,
        tls: bool = True,
        port: int | None = None,
        client_id: str | None = None,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected: queue.Queue[bool] = queue.Queue()
        self.disconnected: queue.Queue[bool] = queue.Queue()
        self.granted: queue.Queue[list[int]] = queue.Queue()
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if login is not None:
            self.mqtt.username_pw_set(*login)
        if tls:
            self.mqtt.tls_set(ca_certs=str(lab.ca_cert))
        self.mqtt.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(not rc.is_failure)
        self.mqtt.on_disconnect = lambda *_args: self.disconnected.put(True)
        self.mqtt.on_subscribe = lambda _c, _u, _m, rcs, _p: self.granted.put(
            [rc.value for rc in rcs]
        )
        self.mqtt.on_message = lambda _c, _u, msg: self.messages.put(msg)
        default_port = lab.tls_port if tls else lab.server_port
        self.mqtt.connect("127.0.0.1", port or default_port, keepalive=5)
        self.mqtt.loop_start()

    def accepted(self) -> bool:
        """True on a successful CONNACK; False on a refusal or a connection closed first."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                return self.connected.get(timeout=0.05)
            except queue.Empty:
                if not self.disconnected.empty():
                    return False
        raise AssertionError("no answer from the broker")

    def subscribe(self, topic: str) -> int:
        self.mqtt.subscribe(topic, qos=1)
        return self.granted.get(timeout=TIMEOUT)[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.mqtt.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)

    def received(self, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
        """Messages until a pause after the first one, or none within `timeout`."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=0.2 if got else 0.05)
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
def lab(
    mosquitto_factory: Callable[..., MosquittoServer], tmp_path_factory: pytest.TempPathFactory
) -> Lab:
    root = tmp_path_factory.mktemp("broker-config")
    server_port = free_port()
    cli = CliRunner(env={
        "FABLAB_DATABASE_URL": f"sqlite:///{root / 'fablab.sqlite3'}",
        "FABLAB_SITE": SITE,
        "FABLAB_MQTT_URL": f"mqtt://127.0.0.1:{server_port}",
        "FABLAB_MQTT_USERNAME": SERVER_USER,
        "FABLAB_MQTT_PASSWORD": SERVER_PASSWORD,
    })
    lab = Lab(cli=cli, root=root, out=root / "mosquitto", ca_cert=root / "ca" / "ca.crt",
              server_port=server_port, tls_port=free_port())
    lab.run("db", "upgrade")
    lab.run("tls-ca", "--out", str(root / "ca"), "--name", "Test lab CA")
    lab.run("tls-cert", "--ca", str(root / "ca"), "--out", str(lab.out / "certs"),
            "--host", "localhost", "--host", "127.0.0.1")
    for machine in ("laser-1", "cnc-1", "drill", "mill", "lathe", "saw"):
        lab.run("add-machine", machine, machine.title())
        lab.issue(machine)
    lab.regenerate()
    # Mosquitto started as root reads its files as `mosquitto`, who cannot enter pytest's
    # root-only temp dirs: it stays root here (a test broker on free ports).
    extra = ["user root"] if os.geteuid() == 0 else []
    lab.broker = mosquitto_factory(
        listen=False, port=lab.server_port, extra_config=[*extra, f"include_dir {lab.out}"]
    )
    return lab


@pytest.fixture
def connect(lab: Lab) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(login: tuple[str, str] | None, **options: object) -> Client:
        client = Client(lab, login, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def server(connect: Callable[..., Client]) -> Client:
    """The fablab server's connection: plain MQTT on the loopback listener."""
    client = connect((SERVER_USER, SERVER_PASSWORD), tls=False, client_id=SERVER_CLIENT_ID)
    assert client.accepted()
    return client


def test_broker_refuses_anonymous_clients_on_the_tls_listener(
    connect: Callable[..., Client],
) -> None:
    assert connect(None).accepted() is False


def test_broker_refuses_plaintext_clients_on_the_tls_listener(
    lab: Lab, connect: Callable[..., Client]
) -> None:
    client = connect(lab.logins["laser-1"], tls=False, port=lab.tls_port)
    assert client.accepted() is False


def test_broker_refuses_a_wrong_password(lab: Lab, connect: Callable[..., Client]) -> None:
    username, _ = lab.logins["laser-1"]
    assert connect((username, "wrong")).accepted() is False


def test_broker_delivers_a_controllers_own_events_only(
    lab: Lab, server: Client, connect: Callable[..., Client]
) -> None:
    assert server.subscribe(subscription_filter(TopicKind.EVENTS)) == 1
    laser = connect(lab.logins["laser-1"])
    assert laser.accepted()

    laser.publish(events_topic(SITE, "cnc-1"), b"forged")
    laser.publish(events_topic(SITE, "laser-1"), b"genuine")

    assert server.received() == [(events_topic(SITE, "laser-1"), b"genuine")]


def test_broker_gives_a_controller_nothing_of_other_machines_on_hash(
    lab: Lab, server: Client, connect: Callable[..., Client]
) -> None:
    server.publish(config_topic(SITE, "laser-1"), b"laser config", retain=True)
    server.publish(config_topic(SITE, "cnc-1"), b"cnc config", retain=True)
    laser = connect(lab.logins["laser-1"])
    assert laser.accepted()

    laser.subscribe("#")
    server.publish(events_topic(SITE, "cnc-1"), b"someone else's event")
    server.publish(command_topic(SITE, "cnc-1"), b"someone else's command")

    assert laser.received() == [(config_topic(SITE, "laser-1"), b"laser config")]


@pytest.mark.parametrize("topic", [config_topic, ack_topic, command_topic])
def test_broker_drops_a_controllers_config_ack_or_command(
    lab: Lab, server: Client, connect: Callable[..., Client], topic: Callable[[str, str], str]
) -> None:
    assert server.subscribe(topic(SITE, "laser-1")) == 1
    assert server.subscribe(status_topic(SITE, "laser-1")) == 1
    server.received(QUIET)  # retained copies, if any
    laser = connect(lab.logins["laser-1"])
    assert laser.accepted()

    laser.publish(topic(SITE, "laser-1"), b"self-granted")
    laser.publish(status_topic(SITE, "laser-1"), b"online")

    assert server.received() == [(status_topic(SITE, "laser-1"), b"online")]


def test_broker_keeps_the_server_on_when_a_controller_takes_its_client_id(
    lab: Lab, server: Client, connect: Callable[..., Client]
) -> None:
    assert server.subscribe(subscription_filter(TopicKind.EVENTS)) == 1
    rogue = connect(lab.logins["laser-1"], client_id=SERVER_CLIENT_ID)
    assert rogue.accepted()

    rogue.publish(events_topic(SITE, "laser-1"), b"after the takeover attempt")

    assert server.received() == [(events_topic(SITE, "laser-1"), b"after the takeover attempt")]
    assert server.disconnected.empty()


def test_broker_keeps_a_controller_on_when_another_takes_its_client_id(
    lab: Lab, connect: Callable[..., Client]
) -> None:
    cnc = connect(lab.logins["cnc-1"], client_id="fablab-pi-cnc-1")  # as firmware_pi names it
    assert cnc.accepted()
    rogue = connect(lab.logins["laser-1"], client_id="fablab-pi-cnc-1")
    assert rogue.accepted()
    assert cnc.subscribe(config_topic(SITE, "cnc-1")) == 1  # a round trip: still connected
    assert cnc.disconnected.empty()


def test_broker_lets_the_server_ingest_through_a_shared_subscription(
    lab: Lab, server: Client, connect: Callable[..., Client]
) -> None:
    assert server.subscribe(shared_filter("ingest", subscription_filter(TopicKind.EVENTS))) == 1
    laser = connect(lab.logins["laser-1"])
    assert laser.accepted()

    laser.publish(events_topic(SITE, "laser-1"), b"shared")

    assert server.received() == [(events_topic(SITE, "laser-1"), b"shared")]


def test_broker_cuts_off_a_revoked_controller_after_regeneration_and_reload(
    lab: Lab, connect: Callable[..., Client]
) -> None:
    drill = connect(lab.logins["drill"])
    assert drill.accepted()

    lab.run("revoke-controller", "drill")
    lab.regenerate()
    lab.broker.reload()

    assert drill.disconnected.get(timeout=TIMEOUT)
    assert connect(lab.logins["drill"]).accepted() is False


def test_broker_refuses_a_replaced_controllers_old_password_after_reload(
    lab: Lab, connect: Callable[..., Client]
) -> None:
    old = lab.logins["mill"]
    new = lab.issue("mill")
    lab.regenerate()
    lab.broker.reload()

    assert connect(old).accepted() is False
    assert connect(new).accepted() is True


# -- fablab-pi check against this broker ---------------------------------------------------


def test_pi_check_gets_the_config_of_credentials_issued_from_the_cli(
    lab: Lab, tmp_path: Path
) -> None:
    # No server process runs: `fablab controller-credentials` itself sends the machine's
    # config signed with the new key (it used to wait for the server's next reconnect).
    printed = lab.run("controller-credentials", "saw", "--broker",
                      f"mqtts://localhost:{lab.tls_port}", "--ca-file", str(lab.ca_cert))
    lab.regenerate()
    lab.broker.reload()
    config = {**tomllib.loads(printed), "data_dir": str(tmp_path / "data")}
    code, output = _pi_check(config, tmp_path / "controller.toml")
    assert code == 0, output
    assert "signed config version" in output


@pytest.fixture(scope="module")
def lathe_config(lab: Lab) -> Iterator[dict[str, object]]:
    """The lathe controller's config as `controller-credentials` prints it (data kept in a
    temp folder), with the broker reloaded and a server publishing the signed configs."""
    printed = lab.run("controller-credentials", "lathe", "--broker",
                      f"mqtts://localhost:{lab.tls_port}", "--ca-file", str(lab.ca_cert))
    config = {**tomllib.loads(printed), "data_dir": str(lab.root / "lathe-data")}
    lab.regenerate()
    lab.broker.reload()
    runtime = ServerRuntime(Settings(
        database_url=lab.cli.env["FABLAB_DATABASE_URL"], site=SITE,
        mqtt_url=f"mqtt://127.0.0.1:{lab.server_port}", mqtt_client_id="fablab-server-check",
        mqtt_username=SERVER_USER, mqtt_password=SERVER_PASSWORD,
    ))
    runtime.start(wait=TIMEOUT)
    yield config
    runtime.stop()


def _pi_check(config: dict[str, object], path: Path, **changes: object) -> tuple[int, str]:
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in
             {**config, **changes}.items()]
    path.write_text("\n".join(lines) + "\n")
    # A process of its own, as on the Pi (its logging setup is its own too).
    result = subprocess.run(
        [str(Path(sys.executable).with_name("fablab-pi")), "check", "--config", str(path),
         "--mock-pins", "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_pi_check_sees_its_login_accepted_and_a_signed_config(
    lathe_config: dict[str, object], tmp_path: Path
) -> None:
    code, output = _pi_check(lathe_config, tmp_path / "controller.toml")
    assert code == 0, output
    assert "broker: login controller-lathe accepted" in output
    assert "signed config version" in output


def test_pi_check_says_what_to_do_when_the_login_is_refused(
    lathe_config: dict[str, object], tmp_path: Path
) -> None:
    code, output = _pi_check(lathe_config, tmp_path / "controller.toml", password="wrong")
    assert code == 1
    [line] = [line for line in output.splitlines() if line.startswith("broker:")]
    assert "refused the login 'controller-lathe'" in line
    assert "fablab controller-credentials lathe" in line


def test_pi_check_says_what_to_do_when_the_ca_is_not_the_brokers(
    lab: Lab, lathe_config: dict[str, object], tmp_path: Path
) -> None:
    lab.run("tls-ca", "--out", str(tmp_path / "other-ca"))
    code, output = _pi_check(lathe_config, tmp_path / "controller.toml",
                             ca_file=str(tmp_path / "other-ca" / "ca.crt"))
    assert code == 1
    assert "broker: PROBLEM: TLS: the broker at localhost" in output


def test_pi_check_says_what_to_do_when_no_config_arrives(
    lathe_config: dict[str, object], tmp_path: Path
) -> None:
    # A wrong site: the ACL gives this login nothing under it, so no config comes.
    code, output = _pi_check(lathe_config, tmp_path / "controller.toml", site="elsewhere")
    assert code == 1
    assert "no config for machine 'lathe' (site 'elsewhere') arrived within 5 s" in output


def test_pi_check_says_what_to_do_when_the_key_is_not_the_servers(
    lathe_config: dict[str, object], tmp_path: Path
) -> None:
    code, output = _pi_check(lathe_config, tmp_path / "controller.toml", key_hex="ab" * 32)
    assert code == 1
    assert "signature does not match key_hex" in output


def test_controller_link_connects_over_tls_trusting_the_lab_ca(lab: Lab) -> None:
    from firmware_pi.link import MqttLink
    from protocol import BrokerAddress

    username, password = lab.logins["cnc-1"]
    link = MqttLink(
        broker=BrokerAddress.parse(f"mqtts://localhost:{lab.tls_port}"),
        controller_id="cnc-1", site=SITE, machine="cnc-1", firmware_version="test",
        boot_id="boot", username=username, password=password, ca_file=str(lab.ca_cert),
    )
    link.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.connected
        tls_socket = link._client.socket()  # Nagle is off under TLS too
        assert tls_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # type: ignore[union-attr]
    finally:
        link.stop()


def _event(controller: str, kind: EventKind, **data: object) -> Event:
    return Event(
        event_id=uuid.uuid4().hex,
        controller_id=controller,
        outbox_id=f"outbox-{controller}-{uuid.uuid4().hex[:6]}",
        seq=1,
        boot_id="boot-1",
        wall_time=time.time() - 60.0,
        mono_time=100.0,
        kind=kind,
        data=dict(data),
    )


@pytest.fixture
def lab_server(lab: Lab) -> Iterator[ServerRuntime]:
    """The server on the lab's database, logged in on the loopback listener."""
    settings = Settings(
        database_url=f"sqlite:///{lab.root / 'fablab.sqlite3'}",
        mqtt_url=f"mqtt://127.0.0.1:{lab.server_port}",
        mqtt_username=SERVER_USER,
        mqtt_password=SERVER_PASSWORD,
        site=SITE,
    )
    runtime = ServerRuntime(settings)
    runtime.start(wait=TIMEOUT)
    yield runtime
    runtime.stop()


def _acks(client: Client, machine: str) -> list[Ack]:
    return [Ack.decode(p) for t, p in client.received() if t == ack_topic(SITE, machine)]


def test_broker_and_server_keep_a_controller_from_rewriting_another_machines_session(
    lab: Lab, lab_server: ServerRuntime, connect: Callable[..., Client]
) -> None:
    member = f"ada-{uuid.uuid4().hex[:6]}"
    lab_server.bus.handle(cmds.AddMember("Ada", member_id=member))
    session_id = f"s-laser-{uuid.uuid4().hex[:6]}"
    laser, cnc = connect(lab.logins["laser-1"]), connect(lab.logins["cnc-1"])
    assert laser.accepted() and cnc.accepted()
    assert laser.subscribe(ack_topic(SITE, "laser-1")) == 1
    assert cnc.subscribe(ack_topic(SITE, "cnc-1")) == 1
    start = _event(
        "laser-1", EventKind.SESSION_STARTED, session_id=session_id, badge_uid="04A1B2C3",
        member_id=member, level=Level.AUTONOMOUS.value, snapshot_version=1,
    )  # fmt: skip
    laser.publish(events_topic(SITE, "laser-1"), start.encode())
    # Acks are cumulative and may repeat (another server process of this module's lab).
    assert {a.up_to_seq for a in _acks(laser, "laser-1")} == {1}

    # Through the ACL, on its own machine's topic, with its own controller id:
    forged_end = _event(
        "cnc-1", EventKind.SESSION_ENDED, session_id=session_id,
        reason=EndReason.BADGE.value, elapsed_seconds=1.0, busy_seconds=0.0,
    )  # fmt: skip
    cnc.publish(events_topic(SITE, "cnc-1"), forged_end.encode())

    assert {(a.up_to_seq, a.rejected) for a in _acks(cnc, "cnc-1")} == {(1, (1,))}
    with lab_server.new_uow() as uow:
        usage = uow.sessions.get(session_id)
        assert usage is not None
        assert (usage.machine_id, usage.ended_at, usage.end_reason) == ("laser-1", None, None)
