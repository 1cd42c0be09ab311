"""Online badge check, closed loop, side by side with FabOMatic 1.0.7 on the same broker.

    python bench/online_check.py [--seconds 5] [--rounds 5] [--members 200]
                                 [--database-url postgresql+psycopg://…] [--start-postgres]
                                 [--cache-dir .bench-cache] [--controller-taps 1000]
                                 [--index-off] [--fabomatic-db-dir /dev/shm]

Starts its own Mosquitto (the shipped broker-wide settings of `fablab mosquitto-config`,
`set_tcp_nodelay true` among them, on a plain loopback listener without logins), then:

- **fablab-monitor**: the server (`ServerRuntime`, as `fablab serve` wires it) on SQLite
  in a temp folder — and on PostgreSQL with `--database-url` (an empty database, migrated
  here) or `--start-postgres` (a throwaway cluster from `initdb`) — with machine `laser`,
  `--members` trained members and the bench badge. A simulated controller (paho, QoS 1,
  Nagle off as `firmware_pi/link.py`) holds the current snapshot version and asks
  `auth/request` → waits for the `auth/response` with its request id, checks its
  signature, asks again: one request outstanding at a time.
- **FabOMatic 1.0.7** (PyPI `FabOMatic==1.0.7`, installed by this script into
  `<cache-dir>/fabomatic-venv` on first use): only its MQTT backend
  (`bench/fabomatic_backend.py`), on a fresh SQLite database seeded through its own
  models with one member, the badge and an authorization on its machine. The same client
  asks `machine/<id>` with `{"action": "checkuser", "uid": …}` and waits for the reply on
  `machine/<id>/reply` (FabOMatic replies with QoS 0). It runs twice: requests published
  with QoS 0 (no PUBACK: FabOMatic's own socket keeps Nagle on, and a PUBACK followed by
  its reply would wait for a delayed ACK) and with QoS 1, as our controllers publish.

`--index-off` adds our server with its access index turned off (every check reads the
database), to show what the index saves; `--fabomatic-db-dir /dev/shm` puts FabOMatic's
database on a RAM disk (each of its checks commits a "last seen" update).

Each round runs every peer for `--seconds`, in turn (ours, FabOMatic, ours on PostgreSQL,
…), after a short warm-up; the tables give each peer's median over the rounds of its
requests/s, p50 and p99, and the server-side time of our checks (its
`fablab_auth_check_seconds`: request arrival to answer handed to the broker
connection). Then `bench/controller_latency.py` runs for the controller's local
decision (tap → relay, from the snapshot, outbox fsync included).

Prints Markdown for docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from protocol import (  # noqa: E402
    AuthRequest,
    BrokerAddress,
    Level,
    ProtocolError,
    auth_request_topic,
    auth_response_topic,
    config_topic,
    set_tcp_nodelay,
    verify_auth_response,
    verify_config,
)
from server.adapters.metrics import REGISTRY  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.adapters.mosquitto import Listeners, render_conf  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402
from tests.fixtures import MosquittoServer, PostgresCluster  # noqa: E402

FABOMATIC = "FabOMatic==1.0.7"
KEY_HEX = "5a" * 32
BADGE = "04BE0C0001"
WARMUP_REQUESTS = 50
TIMEOUT_S = 5.0
# The shipped settings that apply to the whole broker (listeners, TLS and logins aside).
BROKER_WIDE = ("max_queued_messages", "max_inflight_messages", "persistent_client_expiration",
               "set_tcp_nodelay")  # fmt: skip


def shipped_broker_settings() -> list[str]:
    conf = render_conf(Path("/etc/mosquitto/fablab"), Listeners())
    return [line for line in conf.splitlines() if line.split(" ")[0] in BROKER_WIDE]


class ClosedLoopClient:
    """One board or controller: asks, waits for the matching answer, asks again."""

    def __init__(self, url: str, client_id: str, answers: str, *extra: str) -> None:
        address = BrokerAddress.parse(url)
        self.messages: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)  # fmt: skip
        self.client.on_socket_open = set_tcp_nodelay
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect(address.host, address.port, keepalive=30)
        self.client.subscribe([(answers, 1), *((topic, 1) for topic in extra)])
        self.client.loop_start()
        if not subscribed.wait(TIMEOUT_S):
            raise SystemExit(f"{client_id}: no SUBACK from the broker")

    def ask(self, topic: str, payload: bytes, answered: Callable[[str, bytes], bool],
            qos: int = 1) -> float:  # fmt: skip
        """Seconds from publishing the request to receiving the answer it waits for."""
        while not self.messages.empty():  # one request at a time: what waits is stale
            self.messages.get_nowait()  # (another board's replies on a shared topic)
        start = time.perf_counter()
        self.client.publish(topic, payload, qos=qos)
        deadline = start + TIMEOUT_S
        while True:
            answer = self.messages.get(timeout=max(0.0, deadline - time.perf_counter()))
            if answered(*answer):
                return time.perf_counter() - start

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Round:
    requests: int
    seconds: float
    latencies: list[float]
    server_seconds: float | None = None  # mean server-side time per check

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Peer:
    name: str

    def one(self) -> float:
        raise NotImplementedError

    def run(self, seconds: float) -> Round:
        for _ in range(WARMUP_REQUESTS):
            self.one()
        latencies: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            latencies.append(self.one())
        return Round(len(latencies), time.perf_counter() - start, latencies)

    def close(self) -> None: ...


class FablabPeer(Peer):
    """Our server and a simulated controller asking about a trained badge."""

    def __init__(self, name: str, database_url: str, broker_url: str, site: str,
                 members: int, index_max_age_s: float = 2.0) -> None:  # fmt: skip
        self.name = name
        self.site = site
        upgrade(database_url)
        settings = Settings(database_url=database_url, mqtt_url=broker_url, site=site,
                            mqtt_client_id=f"fablab-server-{site}",
                            auth_index_max_age_s=index_max_age_s)  # fmt: skip
        self.server = ServerRuntime(settings)
        _seed(self.server, site, members)
        self.server.start(wait=TIMEOUT_S)
        self.key = bytes.fromhex(KEY_HEX)
        self.version = 0
        self.client = ClosedLoopClient(broker_url, f"ctrl-{site}",
                                       auth_response_topic(site, "laser"),
                                       config_topic(site, "laser"))  # fmt: skip
        self._await_config()

    def _await_config(self) -> None:
        """Take the retained config's version, as a controller holds it (no republish)."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                topic, payload = self.client.messages.get(timeout=0.5)
            except queue.Empty:
                if self.version:
                    return  # the server's republish after connecting has settled
                continue
            if topic == config_topic(self.site, "laser"):
                self.version = verify_config(payload, self.key).version
        if not self.version:
            raise SystemExit(f"{self.name}: no config from the server")

    def one(self) -> float:
        request = AuthRequest(uuid.uuid4().hex, "laser", BADGE, time.time(),
                              snapshot_version=self.version)  # fmt: skip
        topic = auth_response_topic(self.site, "laser")

        def answered(answer_topic: str, payload: bytes) -> bool:
            if answer_topic != topic:
                return False
            try:
                response = verify_auth_response(payload, self.key)
            except ProtocolError:
                return False
            if response.request_id != request.request_id:
                return False
            if not response.granted:
                raise SystemExit(f"{self.name}: the bench badge was refused")
            return True

        return self.client.ask(auth_request_topic(self.site, "laser"), request.encode(), answered)

    def run(self, seconds: float) -> Round:
        before = _auth_check_totals()
        result = super().run(seconds)
        after = _auth_check_totals()
        checks = after[1] - before[1]
        result.server_seconds = (after[0] - before[0]) / checks if checks else None
        return result

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _auth_check_totals() -> tuple[float, float]:
    total = REGISTRY.get_sample_value("fablab_auth_check_seconds_sum") or 0.0
    count = REGISTRY.get_sample_value("fablab_auth_check_seconds_count") or 0.0
    return total, count


def _seed(server: ServerRuntime, site: str, members: int) -> None:
    bus = server.bus
    bus.handle(cmds.AddMachine("laser", "Laser", site, key_hex=KEY_HEX))
    for i in range(members):
        bus.handle(cmds.AddMember(f"Member {i}", member_id=f"m{i}"))
        bus.handle(cmds.RegisterBadge(f"m{i}", f"04AA{i:06X}"))
        bus.handle(cmds.GrantTraining(f"m{i}", "laser", Level.AUTONOMOUS))
    bus.handle(cmds.AddMember("Bench member", member_id="bench"))
    bus.handle(cmds.RegisterBadge("bench", BADGE))
    bus.handle(cmds.GrantTraining("bench", "laser", Level.AUTONOMOUS))


class FabOMaticBackend:
    """FabOMatic's backend in its own virtual environment, on a fresh database."""

    def __init__(self, cache: Path, broker_url: str, work: Path, db_dir: Path) -> None:
        python = _fabomatic_python(cache)
        home = work / "fabomatic-home"
        settings = home / ".config" / "FabOMatic" / "settings.toml"
        settings.parent.mkdir(parents=True)
        address = BrokerAddress.parse(broker_url)
        self.database = Path(tempfile.mkdtemp(prefix="fabomatic-", dir=db_dir)) / "fabomatic.sqldb"
        settings.write_text(_fabomatic_settings(self.database, address))
        self.process = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "fabomatic_backend.py"), BADGE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=work,
            env={**os.environ, "HOME": str(home), "PYTHONPATH": ""},
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:  # FabOMatic prints lines of its own first
            if line.startswith("ready "):
                break
        else:
            raise SystemExit("FabOMatic backend did not start")
        self.topic = f"machine/{line.split()[1]}"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        for path in self.database.parent.iterdir():
            path.unlink()
        self.database.parent.rmdir()


class FabOMaticPeer(Peer):
    """A board asking FabOMatic's backend, its requests published with `qos`."""

    def __init__(self, backend: FabOMaticBackend, broker_url: str, qos: int) -> None:
        self.name = f"FabOMatic 1.0.7 (request QoS {qos})"
        self.qos = qos
        self.topic = backend.topic
        self.client = ClosedLoopClient(broker_url, f"board-qos{qos}", self.topic + "/reply")
        self.query = json.dumps({"action": "checkuser", "uid": BADGE}).encode()

    def one(self) -> float:
        def answered(topic: str, payload: bytes) -> bool:
            reply = json.loads(payload)
            if not reply.get("is_valid"):
                raise SystemExit(f"FabOMatic refused the bench badge: {reply}")
            return True

        return self.client.ask(self.topic, self.query, answered, qos=self.qos)

    def close(self) -> None:
        self.client.close()


def _fabomatic_python(cache: Path) -> Path:
    """The FabOMatic virtual environment's Python, created and installed on first use."""
    venv = cache / "fabomatic-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists() or marker.read_text() != FABOMATIC:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", FABOMATIC], check=True)
        marker.write_text(FABOMATIC)
    return python


def _fabomatic_settings(database: Path, broker: BrokerAddress) -> str:
    return f"""\
[database]
url = "sqlite:///{database}"
name = "fablab"

[MQTT]
broker = "{broker.host}"
port = {broker.port}
client_id = "fabomatic-bench"
topic = "machine"
reply_subtopic = "/reply"
stats_topic = "stats"
user = ""

[web]
secret_key = "bench-only-{uuid.uuid4().hex}"
default_admin_email = "admin@example.org"
base_url = "localhost"

[email]
server = "localhost"
port = 587
use_tls = false
username = ""
password = ""
sender = "admin@example.org"

[weekly_summary]
enabled = false
language = "en"
"""


def controller_decision_p99(taps: int) -> str:
    """p99 of the controller's tap → relay, from bench/controller_latency.py's table."""
    output = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "controller_latency.py"), "--taps", str(taps),
         "--memory-taps", str(taps)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = re.search(r"\| p99 \| ([0-9.]+) ms \|", output)
    return found.group(1) if found else "?"


def commit_floor_ms(folder: Path, commits: int) -> tuple[float, float]:
    """p50 and p99 of one small SQLite commit (WAL, synchronous=FULL, as the controller's
    outbox) on this disk: the floor under the controller's tap → relay time."""
    import sqlite3

    db = sqlite3.connect(folder / "floor.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    times = []
    for n in range(commits):
        start = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?)", (n, b"x" * 300))
        db.execute("COMMIT")
        times.append((time.perf_counter() - start) * 1000)
    db.close()
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per peer and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=200, help="trained members (snapshot)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database, migrated here")
    parser.add_argument("--start-postgres", action="store_true",
                        help="a throwaway PostgreSQL cluster (initdb) instead")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".bench-cache")
    parser.add_argument("--controller-taps", type=int, default=1000)
    parser.add_argument("--fabomatic-db-dir", type=Path, default=None,
                        help="folder of FabOMatic's SQLite file (default: the temp folder; "
                             "/dev/shm: no disk flush)")
    parser.add_argument("--index-off", action="store_true",
                        help="also our server with FABLAB_AUTH_INDEX_MAX_AGE_S=0 (no index)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fablab-bench-online-"))
    load_before = os.getloadavg()
    broker = MosquittoServer(work / "broker", extra_config=shipped_broker_settings())
    broker.start()
    cluster = None
    fabomatic = None
    peers: list[Peer] = []
    try:
        peers.append(FablabPeer("fablab-monitor, SQLite", f"sqlite:///{work / 'server.sqlite3'}",
                                broker.url, "bench", args.members))  # fmt: skip
        if args.index_off:
            peers.append(FablabPeer("fablab-monitor, SQLite, index off",
                                    f"sqlite:///{work / 'server-noindex.sqlite3'}", broker.url,
                                    "benchnoindex", args.members, index_max_age_s=0))  # fmt: skip
        fabomatic = FabOMaticBackend(args.cache_dir, broker.url, work,
                                     args.fabomatic_db_dir or work)  # fmt: skip
        peers += [FabOMaticPeer(fabomatic, broker.url, qos) for qos in (0, 1)]
        pg_url = args.database_url
        if pg_url is None and args.start_postgres:
            cluster = PostgresCluster()
            cluster.start()
            pg_url = cluster.url
        if pg_url:
            peers.append(FablabPeer("fablab-monitor, PostgreSQL", pg_url, broker.url, "benchpg",
                                    args.members))  # fmt: skip
        rounds: dict[str, list[Round]] = {peer.name: [] for peer in peers}
        for _ in range(args.rounds):
            for peer in peers:  # interleaved: ours, theirs, ours…
                rounds[peer.name].append(peer.run(args.seconds))
    finally:
        for peer in reversed(peers):
            peer.close()
        if fabomatic is not None:
            fabomatic.close()
        if cluster is not None:
            cluster.stop()
        broker.stop()
    load_after = os.getloadavg()
    p99 = controller_decision_p99(args.controller_taps)
    floor = commit_floor_ms(work, args.controller_taps)
    report(args, rounds, p99, floor, load_before, load_after)


def report(args: argparse.Namespace, rounds: dict[str, list[Round]], controller_p99: str,
           floor: tuple[float, float], load_before: tuple[float, ...],
           load_after: tuple[float, ...]) -> None:  # fmt: skip
    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}")  # fmt: skip
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after: {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    print(f"rounds: {args.rounds} x {args.seconds:g} s per peer, interleaved; medians of rounds")
    print()
    print("| peer | requests/s | p50 | p99 | server-side mean per check |")
    print("| --- | --- | --- | --- | --- |")
    for name, results in rounds.items():
        server = [r.server_seconds for r in results if r.server_seconds is not None]
        server_text = f"{med(server) * 1000:.2f} ms" if server else "—"
        print(f"| {name} | {med([r.rate for r in results]):.0f} | "
              f"{med([r.pct(0.5) for r in results]):.2f} ms | "
              f"{med([r.pct(0.99) for r in results]):.2f} ms | {server_text} |")  # fmt: skip
    print()
    print("per round (requests/s):")
    for name, results in rounds.items():
        print(f"- {name}: {', '.join(f'{r.rate:.0f}' for r in results)}")
    print()
    print(f"controller local decision (tap → relay), p99 over {args.controller_taps} taps: "
          f"{controller_p99} ms")  # fmt: skip
    print(f"its floor, one SQLite commit (WAL, synchronous=FULL) on the same disk: "
          f"p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
