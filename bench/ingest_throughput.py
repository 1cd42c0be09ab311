"""Ingest throughput through the real broker: events committed *and acked*, vs raw Mosquitto.

    python bench/ingest_throughput.py [--events 20000] [--controllers 5] [--postgres]
                                      [--database-url postgresql+psycopg://…/admin_db]
                                      [--direct]

Starts its own Mosquitto (the `mosquitto` binary, free loopback port) and database:
SQLite (WAL, synchronous=FULL) in a temp folder by default; with `--postgres` a
throwaway PostgreSQL cluster (`initdb` + `pg_ctl`, synchronous_commit=on), or a new
database on the server of `--database-url`. The server's runtime (MQTT link, batched
ingest worker, message bus) runs in this process; `--controllers` simulated
controllers run in a child process, each one MQTT client publishing its share of
`--events` with QoS 1 (a realistic mix: session_started, busy_started, heartbeats,
busy_ended, session_ended, badge_denied) and reading its acks.

Measured: from the first publish to the moment every controller has received an ack
covering its last seq (so every event is committed durably and acked). Then the
database is checked: every event stored exactly once as accepted, one session per
session started, one denial per denial — 0 lost, 0 doubled. In the same run, on the
same broker: raw Mosquitto QoS 1, `mosquitto_pub -l` of as many lines to a
`mosquitto_sub -C N`, for the ratio. With `--direct`: the ingest transaction alone, the
same events fed to the message bus in batches of 1,000 (no broker), and the same
check. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from protocol import Ack, Event, EventKind, Level, ack_topic, events_topic  # noqa: E402
from server.adapters import metrics  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.adapters.orm import BadgeDenial, RawEvent, UsageSession  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402
from tests.fixtures import MosquittoServer  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PostgresCluster,
    create_database,
    unique_database_name,
    with_database,
)

SITE = "lab"
HEARTBEATS_PER_SESSION = 8
TIMEOUT_S = 600.0
BROKER_LIMITS = ("max_queued_messages 50000", "max_inflight_messages 20")


def _stream(machine: str, count: int, base_wall: float, snapshot: int = 1) -> list[bytes]:
    """One controller's events: sessions of start, busy, heartbeats, end; a denial each."""
    outbox, boot = uuid.uuid4().hex, uuid.uuid4().hex
    payloads: list[bytes] = []
    clock = 0.0

    def emit(kind: EventKind, **data: object) -> None:
        nonlocal clock
        clock += 1.0
        payloads.append(Event(
            event_id=uuid.uuid4().hex, controller_id=machine, outbox_id=outbox,
            seq=len(payloads) + 1, boot_id=boot, wall_time=base_wall + clock,
            mono_time=clock, kind=kind, data=data,
        ).encode())  # fmt: skip

    while len(payloads) < count:
        emit(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")
        session, started = uuid.uuid4().hex, clock + 1.0
        emit(EventKind.SESSION_STARTED, session_id=session, badge_uid="04A1B2C3",
             member_id="ada", level=Level.AUTONOMOUS.value, snapshot_version=snapshot)  # fmt: skip
        emit(EventKind.BUSY_STARTED, session_id=session)
        for _ in range(HEARTBEATS_PER_SESSION):
            emit(EventKind.SESSION_HEARTBEAT, session_id=session,
                 elapsed_seconds=clock + 1.0 - started, busy_seconds=0.0)  # fmt: skip
        emit(EventKind.BUSY_ENDED, session_id=session)
        emit(EventKind.SESSION_ENDED, session_id=session, reason="badge",
             elapsed_seconds=clock + 1.0 - started, busy_seconds=0.0)  # fmt: skip
    return payloads[:count]


def _controllers(port: int, streams: dict[str, list[bytes]], pipe: Connection) -> None:
    """Child process: one MQTT client per controller; publish all, wait for the acks."""
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "ERROR"))
    import paho.mqtt.client as mqtt

    done = threading.Event()
    acked: dict[str, int] = dict.fromkeys(streams, 0)
    lock = threading.Lock()

    def on_ack(_c: object, machine: object, message: mqtt.MQTTMessage) -> None:
        ack = Ack.decode(message.payload)
        with lock:
            acked[str(machine)] = max(acked[str(machine)], ack.up_to_seq)
            if all(acked[m] >= len(streams[m]) for m in streams):
                done.set()

    clients = []
    for machine in streams:
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"bench-{machine}", userdata=machine)  # fmt: skip
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_message = on_ack
        client.connect("127.0.0.1", port)
        client.subscribe(ack_topic(SITE, machine), qos=1)
        client.loop_start()
        clients.append((machine, client))
    time.sleep(1.0)  # subscriptions settle; not part of the measure
    pipe.send("ready")
    pipe.recv()
    began = time.perf_counter()
    for machine, client in clients:
        threading.Thread(target=_publish_all, args=(client, machine, streams[machine])).start()
    deadline = time.monotonic() + TIMEOUT_S
    while not done.wait(5.0) and time.monotonic() < deadline:
        logging.getLogger("bench").info("acked so far: %s", acked)
    finished = done.is_set()
    elapsed = time.perf_counter() - began
    pipe.send({"elapsed": elapsed, "finished": finished, "acked": acked})
    for _, client in clients:
        client.loop_stop()
        client.disconnect()


def _publish_all(client: object, machine: str, payloads: list[bytes]) -> None:
    topic = events_topic(SITE, machine)
    for payload in payloads:
        client.publish(topic, payload, qos=1)  # type: ignore[attr-defined]


def _seed(runtime: ServerRuntime, machines: list[str]) -> dict[str, int]:
    """Ada, trained on every machine; returns each machine's snapshot version."""
    bus = runtime.bus
    bus.handle(cmds.AddMember("Ada Lovelace", member_id="ada"))
    bus.handle(cmds.RegisterBadge("ada", "04A1B2C3"))
    for machine in machines:
        bus.handle(cmds.AddMachine(machine, machine, SITE, key_hex="5a" * 32))
        bus.handle(cmds.GrantTraining("ada", machine, Level.AUTONOMOUS))
    with runtime.new_uow() as uow:
        return {m: uow.machines.get(m).snapshot_version for m in machines}  # type: ignore[union-attr]


def _ingest(database_url: str, broker: MosquittoServer, count: int, controllers: int) -> dict:
    upgrade(database_url)
    settings = Settings(database_url=database_url, site=SITE, mqtt_url=broker.url)
    runtime = ServerRuntime(settings)
    machines = [f"m{i}" for i in range(controllers)]
    versions = _seed(runtime, machines)
    base_wall = time.time() - 3 * 86400
    streams = {m: _stream(m, count // controllers, base_wall, versions[m]) for m in machines}
    runtime.start(wait=10)
    parent, child = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(
        target=_controllers, args=(broker.port, streams, child)
    )
    process.start()
    try:
        assert parent.poll(60) and parent.recv() == "ready"
        cpu0 = time.process_time()
        parent.send("go")
        assert parent.poll(TIMEOUT_S + 30), "controllers never reported"
        result = parent.recv()
        result["server_cpu_s"] = time.process_time() - cpu0
        process.join(30)
    finally:
        runtime.stop()
    result.update(_check(runtime, streams))
    result["batches"] = metrics.INGEST_BATCH_SIZE.collect()[0].samples
    return result


def _direct(database_url: str, count: int, controllers: int) -> dict:
    """The ingest transaction alone: the same events, interleaved, fed to the message bus
    in batches of 1,000 (no broker, no MQTT client)."""
    upgrade(database_url)
    runtime = ServerRuntime(Settings(database_url=database_url, site=SITE), mqtt_enabled=False)
    machines = [f"m{i}" for i in range(controllers)]
    versions = _seed(runtime, machines)
    base_wall = time.time() - 3 * 86400
    streams = {m: _stream(m, count // controllers, base_wall, versions[m]) for m in machines}
    messages = [
        (events_topic(SITE, m), streams[m][i])
        for i in range(count // controllers) for m in machines
    ]
    began, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(messages), 1000):
        received_at = datetime.now(UTC)  # one receipt time per batch, as the ingest worker
        runtime.bus.handle(cmds.IngestBatch(tuple(
            cmds.IngestEvent(topic, payload, received_at)
            for topic, payload in messages[start : start + 1000]
        )))  # fmt: skip
    result = {"elapsed": time.perf_counter() - began, "finished": True,
              "server_cpu_s": time.process_time() - cpu0}  # fmt: skip
    result.update(_check(runtime, streams))
    runtime.engine.dispose()
    return result


def _check(runtime: ServerRuntime, streams: dict[str, list[bytes]]) -> dict:
    """0 lost, 0 doubled: every event once as accepted, each session and denial once."""
    expected = sum(len(p) for p in streams.values())
    kinds = [json.loads(p)["kind"] for ps in streams.values() for p in ps]
    with runtime.new_uow() as uow:
        s = uow.session
        by_status = dict(s.execute(select(RawEvent.status, func.count())
                                   .group_by(RawEvent.status)).all())  # fmt: skip
        distinct = s.scalar(select(func.count(func.distinct(RawEvent.event_id))))
        sessions = s.scalar(select(func.count()).select_from(UsageSession))
        ended = s.scalar(select(func.count()).select_from(UsageSession)
                         .where(UsageSession.ended_at.is_not(None)))  # fmt: skip
        denials = s.scalar(select(func.count()).select_from(BadgeDenial))
    accepted = by_status.get("accepted", 0)
    return {
        "expected": expected,
        "accepted": accepted,
        "other_rows": sum(by_status.values()) - accepted,
        "lost": expected - min(accepted, distinct or 0),
        "doubled": accepted - (distinct or 0),
        "sessions_ok": (sessions, ended)
        == (kinds.count("session_started"), kinds.count("session_ended")),
        "denials_ok": denials == kinds.count("badge_denied"),
    }


def _raw_mosquitto(broker: MosquittoServer, count: int, payload: bytes) -> float:
    """Messages/s of `mosquitto_pub -l` → `mosquitto_sub -C count`, both QoS 1."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
         "-t", "bench/raw", "-C", str(count)], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # the subscription is in place; not part of the measure
    lines = (payload.decode() + "\n") * count
    began = time.perf_counter()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                    "-t", "bench/raw", "-l"], input=lines.encode(), check=True)  # fmt: skip
    sub.wait(TIMEOUT_S)
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--controllers", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="a throwaway cluster")
    parser.add_argument("--database-url", help="an existing PostgreSQL server's URL")
    parser.add_argument("--direct", action="store_true",
                        help="the ingest transaction alone: no broker, batches of 1,000")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "ERROR"))
    if not shutil.which("mosquitto_pub"):
        sys.exit("mosquitto_pub / mosquitto_sub missing: apt-get install mosquitto-clients")
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url or args.postgres:
            admin = args.database_url
            if admin is None:
                cluster = PostgresCluster()
                cluster.start()
                admin = cluster.url
            name = unique_database_name("bench_ingest")
            create_database(admin, name)
            url = with_database(admin, name)
        else:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        # The queueing limits of the shipped broker config (deploy/mosquitto/fablab.conf).
        load = os.getloadavg()
        if args.direct:
            try:
                result = _direct(url, args.events, args.controllers)
            finally:
                if cluster is not None:
                    cluster.stop()
            _report_direct(url, result, load)
            return
        broker = MosquittoServer(Path(tmp) / "mosquitto", extra_config=BROKER_LIMITS)
        broker.start()
        try:
            result = _ingest(url, broker, args.events, args.controllers)
            sample = _stream("m0", 3, time.time())[2]
            raw = _raw_mosquitto(broker, args.events, sample)
        finally:
            broker.stop()
            if cluster is not None:
                cluster.stop()
    _report(args, url, result, raw, load)


def _machine_line(load: tuple) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"load average before the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip


def _report_direct(url: str, r: dict, load: tuple) -> None:
    _machine_line(load)
    print("| database | events | committed / s (no broker) | lost | doubled | CPU µs / event |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {url.split(':', 1)[0].split('+')[0]} | {r['expected']:,} "
          f"| {r['expected'] / r['elapsed']:,.0f} | {r['lost']} | {r['doubled']} "
          f"| {r['server_cpu_s'] / r['expected'] * 1e6:.0f} |")  # fmt: skip
    if not (r["sessions_ok"] and r["denials_ok"] and r["other_rows"] == 0):
        print(f"<!-- CHECK FAILED: {r} -->")


def _report(args: argparse.Namespace, url: str, r: dict, raw: float, load: tuple) -> None:
    rate = r["expected"] / r["elapsed"]
    cpu_us = r["server_cpu_s"] / r["expected"] * 1e6
    batches = {s.name: s.value for s in r["batches"] if s.name.endswith(("_count", "_sum"))}
    count = batches.get("fablab_ingest_batch_size_count", 0)
    mean = batches.get("fablab_ingest_batch_size_sum", 0) / count if count else 0
    _machine_line(load)
    print("| database | events | controllers | committed + acked / s | raw Mosquitto QoS 1 msg/s "
          "| ratio | lost | doubled | batches (mean size) | server CPU µs / event |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {url.split(':', 1)[0].split('+')[0]} | {r['expected']:,} | {args.controllers} "
          f"| {rate:,.0f} | {raw:,.0f} | {rate / raw:.2f} | {r['lost']} | {r['doubled']} "
          f"| {count:.0f} ({mean:.0f}) | {cpu_us:.0f} |")  # fmt: skip
    if not (r["finished"] and r["sessions_ok"] and r["denials_ok"] and r["other_rows"] == 0):
        print(f"<!-- CHECK FAILED: {r} -->")


if __name__ == "__main__":
    main()
