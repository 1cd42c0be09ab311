"""Scale-out: ingest throughput of one vs two `fablab serve` processes on one PostgreSQL.

    python bench/scale_out.py [--controllers 5] [--events 4000] [--database-url URL]

Starts its own Mosquitto (no queue limit: the broker holds what the servers have not
taken yet) and a throwaway PostgreSQL cluster (or uses the server behind
`--database-url`, creating a database per run there). Each run gets a fresh database
with `--controllers` machines, then the server processes (`FABLAB_MQTT_SHARED_GROUP`:
events spread over them by an MQTT shared subscription, each process its own client
id). The controllers (paho clients) publish `--events` events in all (one session
each, then heartbeats) at QoS 1 as fast as the broker takes them, and keep each event
until an ack covers it, resending the oldest unacked as the firmware's outbox does
(100 of them after 10 s without progress, then after 20, 40… up to 320 s).

Each controller's first event (its session) is published and acked before timing
starts, so the servers are up and subscribed. Throughput = the other events / (first
timed publish → last ack covering every event), committed and acked. Three runs: one
server; two servers; two servers with one killed (SIGKILL) once a third of the events
are acked. After each run the database is checked against what was published: lost =
published event ids not stored, doubled = event ids or (controller, outbox, seq)
stored more than once.

The machine has 2 cores shared by PostgreSQL, Mosquitto, the server processes and the
publishers: a second server process can only use CPU the others leave idle. Prints a
Markdown summary for docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import postgres_pids, total_cpu  # noqa: E402
from protocol import Ack, Event, EventKind, Level, ack_topic, events_topic  # noqa: E402
from server.adapters.orm import RawEvent  # noqa: E402
from tests.faults.harness import ServerProcess  # noqa: E402
from tests.fixtures import MosquittoServer  # noqa: E402
from tests.fixtures.postgres import PostgresCluster, create_database, with_database  # noqa: E402

SITE = "bench"
GROUP = "ingest"
# The firmware's outbox rule (firmware_pi/app.py): while the oldest unacked event does
# not move, resend the oldest RESEND_WINDOW after 10 s, then after 20, 40… up to 320 s.
RESEND_AFTER_S = 10.0
RESEND_MAX_S = 320.0
RESEND_WINDOW = 100


def register(url: str, controllers: int) -> list[str]:
    """A fresh database with the machines; their ids."""
    from server.adapters.migrations import upgrade
    from server.bootstrap import ServerRuntime
    from server.config import Settings
    from server.service_layer import commands as cmds

    upgrade(url)
    runtime = ServerRuntime(Settings(database_url=url, site=SITE), mqtt_enabled=False)
    machines = [f"m{i:02d}" for i in range(controllers)]
    try:
        for machine in machines:
            runtime.bus.handle(cmds.AddMachine(machine, machine, SITE, key_hex="5a" * 32))
    finally:
        runtime.stop()
    return machines


@dataclass
class Publisher:
    """One controller: its paho client and its outbox (events kept until acked)."""

    machine: str
    host: str
    port: int
    outbox_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    payloads: list[bytes] = field(default_factory=list)
    acked: int = 0
    sent: int = 0  # payloads handed to the client so far
    acked_at: float = 0.0
    changed_at: float = 0.0
    resend_after_s: float = RESEND_AFTER_S
    done: threading.Event = field(default_factory=threading.Event)

    def prepare(self, count: int) -> None:
        start = time.time() - count - 60
        for seq in range(1, count + 1):
            kind, data = EventKind.SESSION_HEARTBEAT, {
                "session_id": f"s-{self.outbox_id}", "elapsed_seconds": float(seq),
                "busy_seconds": 0.0,
            }  # fmt: skip
            if seq == 1:
                kind, data = EventKind.SESSION_STARTED, {
                    "session_id": f"s-{self.outbox_id}", "badge_uid": "04A1B2C3",
                    "member_id": "m1", "level": Level.AUTONOMOUS.value, "snapshot_version": 1,
                }  # fmt: skip
            self.payloads.append(Event(
                event_id=uuid.uuid4().hex, controller_id=self.machine, outbox_id=self.outbox_id,
                seq=seq, boot_id="boot", wall_time=start + seq, mono_time=float(seq),
                kind=kind, data=data,
            ).encode())  # fmt: skip

    def connect(self) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"bench-{self.machine}", protocol=mqtt.MQTTv311, clean_session=False,
        )  # fmt: skip
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        connected = threading.Event()
        self.client.on_connect = lambda c, *_: (c.subscribe(ack_topic(SITE, self.machine), 1),
                                                connected.set())  # fmt: skip
        self.client.on_message = self._on_ack
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not connected.wait(30):
            raise RuntimeError(f"publisher {self.machine} could not connect")

    def _on_ack(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        ack = Ack.decode(bytes(message.payload))
        if ack.outbox_id == self.outbox_id and ack.up_to_seq > self.acked:
            self.acked, self.acked_at = ack.up_to_seq, time.time()
            self.changed_at, self.resend_after_s = self.acked_at, RESEND_AFTER_S
            if self.acked >= len(self.payloads):
                self.done.set()

    def publish(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.client.publish(events_topic(SITE, self.machine), payload, qos=1)

    def send_new(self, count: int | None = None) -> None:
        """Publish the next `count` events of the outbox (all the rest by default)."""
        end = len(self.payloads) if count is None else self.sent + count
        payloads, self.sent = self.payloads[self.sent : end], end
        self.publish(payloads)

    def resend_if_stuck(self, now: float) -> int:
        """The outbox's rule: the oldest unacked events again, backing off while stuck."""
        if self.done.is_set() or now - self.changed_at < self.resend_after_s:
            return 0
        self.changed_at = now
        self.resend_after_s = min(self.resend_after_s * 2, RESEND_MAX_S)
        window = self.payloads[self.acked : min(self.sent, self.acked + RESEND_WINDOW)]
        self.publish(window)
        return len(window)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class RunResult:
    name: str
    events: int
    seconds: float
    resent: int
    lost: int
    doubled: int
    servers_cpu: float = 0.0  # % of one core, all server processes, timed part
    postgres_cpu: float = 0.0
    machine_busy: float = 0.0  # % of all cores busy (every process on the machine)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def check_database(url: str, publishers: list[Publisher]) -> tuple[int, int]:
    """(lost, doubled): published events not stored; events stored more than once."""
    engine = create_engine(url)
    try:
        with Session(engine) as db:
            stored = db.execute(
                select(RawEvent.event_id, func.count()).group_by(RawEvent.event_id)
            ).all()
            by_seq = db.execute(
                select(RawEvent.controller_id, RawEvent.outbox_id, RawEvent.seq, func.count())
                .where(RawEvent.seq.is_not(None))
                .group_by(RawEvent.controller_id, RawEvent.outbox_id, RawEvent.seq)
                .having(func.count() > 1)
            ).all()
    finally:
        engine.dispose()
    counts = {event_id: n for event_id, n in stored}
    published = [Event.decode(p).event_id for pub in publishers for p in pub.payloads]
    lost = sum(1 for event_id in published if event_id not in counts)
    doubled = sum(n - 1 for n in counts.values() if n > 1) + len(by_seq)
    return lost, doubled


def one_run(
    name: str, tmp: Path, url: str, broker: MosquittoServer, servers: int, args: argparse.Namespace,
    cluster: PostgresCluster | None, kill_at: float | None = None,
) -> RunResult:  # fmt: skip
    machines = register(url, args.controllers)
    procs = []
    for i in range(servers):
        proc = ServerProcess(tmp / f"{name}-server{i}", database_url=url, broker_url=broker.url,
                             site=SITE)  # fmt: skip
        proc.env.update({"FABLAB_MQTT_SHARED_GROUP": GROUP,
                         "FABLAB_MQTT_CLIENT_ID": f"fablab-{name}-{i}"})  # fmt: skip
        proc.start()
        procs.append(proc)
    per = args.events // len(machines)
    publishers = [Publisher(m, broker.host, broker.port) for m in machines]
    for pub in publishers:
        pub.prepare(per)
        pub.connect()
    try:
        seconds, resent, usage = drive(publishers, procs, kill_at, cluster)
    finally:
        for pub in publishers:
            pub.close()
        for proc in procs:
            proc.stop()
    lost, doubled = check_database(url, publishers)
    return RunResult(name, (per - 1) * len(machines), seconds, resent, lost, doubled, *usage)


def drive(
    publishers: list[Publisher], procs: list[ServerProcess], kill_at: float | None,
    cluster: PostgresCluster | None,
) -> tuple[float, int, tuple[float, float, float]]:  # fmt: skip
    """Open each controller's session (acked before timing starts: the servers are
    subscribed), publish the rest, resend what stays unacked, kill a server if asked;
    the seconds from the first timed publish to the last ack, and the events resent."""
    for pub in publishers:
        pub.changed_at = time.time()
        pub.send_new(1)
    resent = _until(publishers, lambda: all(p.acked >= 1 for p in publishers))
    total = sum(len(p.payloads) - 1 for p in publishers)
    server_pids = [p.process.pid for p in procs if p.process is not None]
    pg = postgres_pids(cluster)
    before = (total_cpu(server_pids), total_cpu(pg), machine_ticks())
    started = time.time()
    for pub in publishers:
        pub.changed_at = started
        threading.Thread(target=pub.send_new, daemon=True).start()
    killed: list[bool] = []

    def finished() -> bool:
        acked = sum(p.acked - 1 for p in publishers)
        if kill_at is not None and not killed and acked >= kill_at * total:
            procs[0].kill9()
            killed.append(True)
        return all(p.done.is_set() for p in publishers)

    resent += _until(publishers, finished)
    elapsed = time.time() - started
    busy, ticks = (a - b for a, b in zip(machine_ticks(), before[2], strict=True))
    usage = (
        (total_cpu(server_pids) - before[0]) / elapsed * 100,
        (total_cpu(pg) - before[1]) / elapsed * 100,
        busy / ticks * 100 if ticks else float("nan"),
    )
    return max(p.acked_at for p in publishers) - started, resent, usage


def _until(publishers: list[Publisher], condition: Callable[[], bool]) -> int:
    """Resend what stays unacked (the outbox's rule) until the condition holds."""
    resent = 0
    deadline = time.time() + 1800
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
        now = time.time()
        resent += sum(p.resend_if_stuck(now) for p in publishers)
    return resent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=5)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server's URL")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop what we started
    tmp = Path(tempfile.mkdtemp(prefix="fablab-scale-out-"))
    cluster = None if args.database_url else PostgresCluster()
    if cluster is not None:
        cluster.start()
    admin_url = args.database_url or (cluster.url if cluster else "")
    broker = MosquittoServer(tmp / "broker", extra_config=["max_queued_messages 0",
                                                           "set_tcp_nodelay true"])  # fmt: skip
    broker.start()
    load0 = os.getloadavg()
    results = []
    try:
        for name, servers, kill_at in (("one", 1, None), ("two", 2, None),
                                       ("two-kill", 2, 1 / 3)):  # fmt: skip
            database = f"scale_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
            create_database(admin_url, database)
            url = with_database(admin_url, database)
            results.append(one_run(name, tmp, url, broker, servers, args, cluster, kill_at))
            print(f"{name}: {results[-1]}", file=sys.stderr)
    finally:
        broker.stop()
        if cluster is not None:
            cluster.stop()
    report(results, args, (load0[0], os.getloadavg()[0]))


def report(results: list[RunResult], args: argparse.Namespace, load: tuple[float, float]) -> None:
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{args.events} events from {args.controllers} controllers per run, PostgreSQL; "
          f"load average {load[0]:.1f} → {load[1]:.1f}\n")
    print("| run | events | seconds | events / s | resent | lost | doubled "
          "| servers CPU | PostgreSQL CPU | machine busy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.name} | {r.events} | {r.seconds:.1f} | {r.events / r.seconds:.0f} | "
              f"{r.resent} | {r.lost} | {r.doubled} | {r.servers_cpu:.0f} % | "
              f"{r.postgres_cpu:.0f} % | {r.machine_busy:.0f} % |")
    print("\n(CPU: % of one core; machine busy: % of both cores, every process on the box)")
    one = next(r for r in results if r.name == "one")
    two = next(r for r in results if r.name == "two")
    ratio = (two.events / two.seconds) / (one.events / one.seconds)
    print(f"\nTwo processes vs one: {ratio:.2f} times (target: at least 1.6)")


if __name__ == "__main__":
    main()
