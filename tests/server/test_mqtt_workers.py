"""The server's MQTT-side workers: bounded, batched ingest queue, fair online checks."""

from __future__ import annotations

import queue
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from protocol import (
    Ack,
    AuthRequest,
    ControllerState,
    ControllerStatus,
    EventKind,
    auth_request_topic,
    config_topic,
    events_topic,
    status_topic,
)
from server.adapters.migrations import upgrade
from server.adapters.mqtt import FairAuthQueue, IngestWorker
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer.commands import (
    AnswerAuthRequest,
    OutgoingMessage,
    RecordControllerStatus,
    RecordControllerStatuses,
)
from server.service_layer.ingest import IngestOutcome, Outcome
from tests.fixtures import MosquittoServer
from tests.server.conftest import SITE, EventFactory

TIMEOUT = 10.0


def _request(controller: str, n: int) -> bytes:
    return AuthRequest(f"r{n}", controller, "04FFEE01", 1_767_000_000.0).encode()


def test_ingest_worker_blocks_the_submitter_when_its_queue_is_full(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", ingest_queue_size=2)
    runtime = ServerRuntime(settings, mqtt_enabled=False)
    runtime.ingest.submit("not/a/topic", b"1")
    runtime.ingest.submit("not/a/topic", b"2")
    third = threading.Thread(target=runtime.ingest.submit, args=("not/a/topic", b"3"))
    third.start()
    third.join(0.3)
    try:
        assert third.is_alive()  # held back, not dropped: the broker keeps the message
    finally:
        runtime.ingest.start()
        third.join(TIMEOUT)
        runtime.ingest.stop()
        runtime.engine.dispose()
    assert not third.is_alive()
    assert runtime.ingest.stats["bad_topic"] == 3


def test_auth_queue_serves_controllers_round_robin() -> None:
    queue = FairAuthQueue(per_controller=20_000)
    for n in range(10_000):
        queue.put("laser", n)
    queue.put("cnc", "cnc-request")
    served = [queue.get(timeout=0) for _ in range(2)]
    assert "cnc-request" in served


def test_auth_queue_drops_requests_past_their_deadline() -> None:
    now = [100.0]
    queue = FairAuthQueue(timeout_s=1.5, clock=lambda: now[0])
    queue.put("laser", "old")
    now[0] += 2.0
    queue.put("laser", "fresh")
    assert queue.get(timeout=0) == "fresh"
    assert queue.stats["auth_expired"] == 1


def test_auth_queue_never_blocks_a_flooding_controller_and_keeps_it_bounded() -> None:
    queue = FairAuthQueue(per_controller=100)
    for n in range(10_000):
        queue.put("laser", n)  # returns at once: the network loop is never held
    assert queue.pending("laser") == 100
    assert queue.stats["auth_overflow"] == 9_900
    assert queue.get(timeout=0) == 9_900  # the newest are kept: the oldest are stale


def test_auth_worker_answers_another_controller_behind_a_flood(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    runtime = ServerRuntime(settings, mqtt_enabled=False)
    served: list[str] = []
    answered = threading.Event()

    def handle(cmd: Any) -> None:
        assert isinstance(cmd, AnswerAuthRequest)
        served.append(cmd.topic)
        if "/cnc/" in cmd.topic:
            answered.set()

    runtime.auth_worker.bus.handle = handle  # type: ignore[method-assign]
    for n in range(10_000):
        runtime.auth_worker.submit(auth_request_topic("lab", "laser"), _request("laser", n))
    runtime.auth_worker.submit(auth_request_topic("lab", "cnc"), _request("cnc", 0))
    runtime.auth_worker.start()
    try:
        assert answered.wait(TIMEOUT)
    finally:
        runtime.auth_worker.stop()
        runtime.dispose()
    assert served.index(auth_request_topic("lab", "cnc")) <= 1


def _drain(lab: ServerRuntime, sent: list[OutgoingMessage]) -> None:
    """Start the ingest worker on what is queued and wait until it has handled it all."""
    sent.clear()
    lab.ingest.start()
    try:
        lab.ingest.stop()  # returns once everything queued before it is handled
    finally:
        lab.engine.dispose()


def test_ingest_worker_takes_the_events_waiting_as_one_batch_with_one_ack_per_stream(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    laser = EventFactory()
    topic = events_topic(SITE, "laser")
    for _ in range(5):
        lab.ingest.submit(topic, laser(EventKind.BADGE_DENIED, badge_uid="04FFEE01",
                                       reason="not_trained").encode())  # fmt: skip
    lab.ingest.submit(topic, b"garbage")
    _drain(lab, sent)
    assert lab.ingest.stats["events_accepted"] == 5
    assert lab.ingest.stats["events_unreadable"] == 1
    acks = [Ack.decode(m.payload) for m in sent if m.topic.endswith("/ack")]
    assert [a.up_to_seq for a in acks] == [5]


def test_ingest_worker_keeps_one_batch_when_status_messages_come_between_events(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    """Controllers re-announce their status every heartbeat: a fleet's statuses must
    not cut the events waiting into batches of one."""
    laser = EventFactory()
    status = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "boot-1", 1.0)
    for _ in range(5):
        denied = laser(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")
        lab.ingest.submit(events_topic(SITE, "laser"), denied.encode())
        lab.ingest.submit(status_topic(SITE, "laser"), status.encode())
    _drain(lab, sent)
    assert lab.ingest.stats["events_accepted"] == 5
    assert lab.ingest.stats["status_ok"] == 5
    acks = [Ack.decode(m.payload) for m in sent if m.topic.endswith("/ack")]
    assert [a.up_to_seq for a in acks] == [5]


def test_record_controller_statuses_applies_each_and_refuses_only_the_unusable(
    lab: ServerRuntime,
) -> None:
    online = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "boot-1", 1.0)
    applied = lab.bus.handle(RecordControllerStatuses((
        RecordControllerStatus(status_topic(SITE, "laser"), b"not json"),
        RecordControllerStatus(status_topic(SITE, "laser"), online.encode()),
    )))  # fmt: skip
    assert applied == [False, True]
    with lab.new_uow() as uow:
        controller = uow.controllers.get("laser")
        assert controller is not None and controller.state == "online"


def _subscriber(broker: MosquittoServer, topic: str) -> tuple[mqtt.Client, queue.Queue[bytes]]:
    received: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, message: received.put(bytes(message.payload))
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(TIMEOUT)
    return client, received


def test_server_sends_a_config_while_ingest_holds_back_the_broker(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """A full ingest queue stops the reading of events; configs and acks still go out
    (a config waits for the broker's confirmation, which must not wait behind ingest)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    site, machine = "lab", f"m{uuid.uuid4().hex[:12]}"
    settings = Settings(
        database_url=url, mqtt_url=mosquitto.url, site=site, ingest_queue_size=1,
        mqtt_client_id=f"server-{machine}", config_publish_timeout_s=TIMEOUT,
    )  # fmt: skip
    runtime = ServerRuntime(settings)
    release, held = threading.Event(), threading.Event()
    runtime.ingest._ingest = lambda _events: release.wait(TIMEOUT * 3)  # type: ignore[method-assign]
    submit = runtime.ingest.submit

    def submit_noting_when_held(topic: str, payload: bytes) -> None:
        if runtime.ingest._queue.full():
            held.set()  # the network thread now waits for room in the queue
        submit(topic, payload)

    runtime.ingest.submit = submit_noting_when_held  # type: ignore[method-assign]
    runtime.start(wait=TIMEOUT)
    flood, _ = _subscriber(mosquitto, f"unused/{machine}")
    watcher, configs = _subscriber(mosquitto, config_topic(site, machine))
    try:
        for n in range(50):  # until one is applied, one queued and the network thread held
            flood.publish(events_topic(site, machine), f"event {n}", qos=1).wait_for_publish(
                TIMEOUT
            )
            if held.wait(0.2):
                break
        assert held.is_set()
        message = OutgoingMessage(config_topic(site, machine), b"config", retain=True)
        sender = threading.Thread(target=runtime.bus.publish, args=(message,))
        sender.start()
        assert configs.get(timeout=TIMEOUT) == b"config"  # before ingest moves on
        sender.join(TIMEOUT)
    finally:
        release.set()
        watcher.publish(config_topic(site, machine), b"", qos=1, retain=True).wait_for_publish(
            TIMEOUT
        )
        for client in (flood, watcher):
            client.disconnect()
            client.loop_stop()
        runtime.stop()


class _Recorder:
    """A bus that notes the commands it is given (no database)."""

    def __init__(self) -> None:
        self.handled: list[object] = []

    def handle(self, cmd: object) -> object:
        self.handled.append(cmd)
        if isinstance(cmd, RecordControllerStatuses):
            return [True] * len(cmd.statuses)
        return [IngestOutcome(Outcome.ACCEPTED, acked_seq=1) for _ in cmd.events]  # type: ignore[attr-defined]


def test_ingest_worker_records_statuses_once_a_second_while_events_keep_coming() -> None:
    # 1,000 controllers re-announce every 10 s: recorded at every turn, their statuses
    # took a transaction per turn of the ingest thread.
    now = [0.0]
    bus = _Recorder()
    worker = IngestWorker(bus, status_interval_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    laser = EventFactory()

    def turn(*kinds: str) -> list[str]:
        items: list[object] = []
        for kind in kinds:
            if kind == "event":
                denied = laser(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")
                items.append((events_topic(SITE, "laser"), denied.encode(), now[0]))
            else:
                status = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "b", now[0])
                items.append((status_topic(SITE, "laser"), status.encode(), now[0]))
        bus.handled.clear()
        worker._handle_turn(items)
        return [type(cmd).__name__ for cmd in bus.handled]

    assert turn("event", "status") == ["IngestBatch"]
    now[0] = 0.5
    assert turn("status", "event") == ["IngestBatch"]
    now[0] = 1.0
    assert turn("event") == ["IngestBatch", "RecordControllerStatuses"]
    assert len(bus.handled[-1].statuses) == 2  # type: ignore[attr-defined]  # both, in order
    assert turn("status") == ["RecordControllerStatuses"]  # no events: recorded at once
