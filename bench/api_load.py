"""API under load: `GET /api/machines` with N concurrent clients, and ingest meanwhile.

    python bench/api_load.py [--clients 50 200] [--seconds 10] [--machines 20]
                             [--paced-interval 1.0] [--ingest-rate 20] [--database-url URL]

Starts its own Mosquitto (the `mosquitto` binary), seeds a database (SQLite in a temp
folder by default, or the given PostgreSQL URL, migrated first: use an empty database)
with `--machines` machines, a manager and their API token, then runs the server in its
own process as `fablab serve` does (uvicorn, settings from FABLAB_* variables).
Simulated controllers publish `badge_denied` events on every machine (QoS 1, in all
`--ingest-rate` events/s) for the whole run and wait for the server's acks.

For each client count it runs, for `--seconds` each:
- **closed loop**: every client sends its next request as soon as the previous answer
  arrived (the server's throughput; latency is then clients / throughput);
- **paced**: every client sends one request every `--paced-interval` seconds (200
  clients at 1 s: 200 floor screens refreshing each second), so latency is measured
  below saturation;
first against fablab-monitor (bearer token), then against the peer: a bare FastAPI app
(uvicorn, one process) serving the same JSON bytes. It prints requests/s, p50, p99,
max; errors (5xx answers / other non-200 answers / transport errors: a connection
refused or closed without an answer, e.g. the server closing a keep-alive connection
that an overloaded client was slow to reuse); the server process's CPU time per answer
(user + system, all its threads, ingest included: less sensitive than latency to what
else the machine runs; in the ingest-alone phase, its CPU time per second); and the acks
received while each phase ran, with their latency (publish → ack). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import paho.mqtt.client as mqtt

from protocol import Ack, DenyReason, Event, EventKind, ack_topic, events_topic
from server.adapters.migrations import upgrade
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.access import Role
from server.service_layer import commands as cmds
from tests.fixtures import MosquittoServer, free_port, wait_for_port

SITE = "bench"
REQUEST_TIMEOUT_S = 30.0
# One TLS context for every client (the URLs are plain HTTP): building one per client
# (loading the CA bundle) would cost seconds of CPU with hundreds of clients.
_PLAIN_HTTP = ssl.create_default_context()


# -- the database ------------------------------------------------------------------------


def seed(database_url: str, machines: int) -> str:
    """Machines, a manager and their API token; the token."""
    upgrade(database_url)
    runtime = ServerRuntime(Settings(database_url=database_url, site=SITE), mqtt_enabled=False)
    try:
        for n in range(machines):
            runtime.bus.handle(cmds.AddMachine(f"m{n:03d}", f"Machine {n}", SITE))
        runtime.bus.handle(cmds.AddMember("Mona Manager", member_id="mona"))
        runtime.bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
        token: str = runtime.bus.handle(cmds.CreateApiToken("mona", "bench")).token
    finally:
        runtime.dispose()
    return token


# -- simulated ingest --------------------------------------------------------------------


@dataclass
class IngestTraffic:
    """Controllers publishing denials at a steady rate and timing the server's acks."""

    broker_port: int
    machines: list[str]
    rate: float
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)
    acked: list[tuple[float, float]] = field(default_factory=list)  # (ack time, latency)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._outbox = uuid.uuid4().hex
        self._seq = dict.fromkeys(self.machines, 0)
        self._acked_up_to = dict.fromkeys(self.machines, 0)
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ctl")
        self._client.on_message = self._on_ack
        self._client.connect("127.0.0.1", self.broker_port)
        for machine in self.machines:
            self._client.subscribe(ack_topic(SITE, machine), qos=1)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._publish_loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.loop_stop()
        self._client.disconnect()

    def _publish_loop(self) -> None:
        period, n = 1.0 / self.rate, 0
        start = time.monotonic()
        while not self._stop.is_set():
            machine = self.machines[n % len(self.machines)]
            with self._lock:
                self._seq[machine] += 1
                seq = self._seq[machine]
                self.sent_at[(machine, seq)] = time.monotonic()
            event = Event(
                event_id=uuid.uuid4().hex, controller_id=machine, outbox_id=self._outbox,
                seq=seq, boot_id="bench", wall_time=time.time(), mono_time=time.monotonic(),
                kind=EventKind.BADGE_DENIED,
                data={"badge_uid": "04FFEE01", "reason": DenyReason.UNKNOWN_BADGE.value},
            )  # fmt: skip
            self._client.publish(events_topic(SITE, machine), event.encode(), qos=1)
            n += 1
            self._stop.wait(max(0.0, start + n * period - time.monotonic()))

    def _on_ack(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        ack = Ack.decode(bytes(message.payload))
        now = time.monotonic()
        with self._lock:
            for seq in range(self._acked_up_to.get(ack.controller_id, 0) + 1, ack.up_to_seq + 1):
                sent = self.sent_at.pop((ack.controller_id, seq), None)
                if sent is not None:
                    self.acked.append((now, now - sent))
            self._acked_up_to[ack.controller_id] = max(
                ack.up_to_seq, self._acked_up_to.get(ack.controller_id, 0)
            )

    @property
    def published(self) -> int:
        return sum(self._seq.values())

    def between(self, start: float, end: float) -> list[float]:
        """Ack latencies of the acks received in [start, end)."""
        with self._lock:
            return [latency for at, latency in self.acked if start <= at < end]


# -- the servers -------------------------------------------------------------------------


Process = subprocess.Popen[bytes]


def start_fablab(database_url: str, broker_port: int, http_port: int, log: Path) -> Process:
    env = dict(os.environ)
    env.update(
        FABLAB_DATABASE_URL=database_url, FABLAB_MQTT_URL=f"mqtt://127.0.0.1:{broker_port}",
        FABLAB_SITE=SITE, FABLAB_HTTP_PORT=str(http_port), FABLAB_MQTT_CLIENT_ID="bench-server",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve"], env=env, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


PEER_APP = """
import sys
from pathlib import Path
import uvicorn
from fastapi import FastAPI, Response
body = Path(sys.argv[1]).read_bytes()
app = FastAPI()
@app.get("/api/machines")
async def machines() -> Response:
    return Response(body, media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def start_peer(body_file: Path, http_port: int, log: Path) -> Process:
    return subprocess.Popen(
        [sys.executable, "-c", PEER_APP, str(body_file), str(http_port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_up(process: Process, port: int, log: Path) -> None:
    if not wait_for_port("127.0.0.1", port, 60, alive=lambda: process.poll() is None):
        raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def stop(process: Process) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the clients -------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies: list[float]
    seconds: float
    server_errors: int = 0
    other_statuses: int = 0
    transport_errors: int = 0
    first_error: str = ""
    server_cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.server_errors + self.other_statuses + self.transport_errors

    def row(self, name: str, clients: int, mode: str, acks: list[float] | None) -> str:
        ordered = sorted(self.latencies) or [float("nan")]
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        ack = "—" if acks is None else _acks(acks)
        answered = len(self.latencies)
        cpu_per_request = f"{self.server_cpu_s / answered * 1000:.2f} ms" if answered else "—"
        return (
            f"| {name} | {clients} | {mode} | {len(self.latencies) / self.seconds:,.0f} | "
            f"{statistics.median(ordered) * 1000:.1f} ms | {p99 * 1000:.1f} ms | "
            f"{ordered[-1] * 1000:.0f} ms | {self.server_errors} / {self.other_statuses} / "
            f"{self.transport_errors} | {cpu_per_request} | {ack} |"
        )


def _acks(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{len(ordered)}, p50 {statistics.median(ordered) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms")  # fmt: skip


async def _client(
    url: str, headers: dict[str, str], end: float, interval: float | None,
    result: LoadResult, offset: float,
) -> None:  # fmt: skip
    # One connection per client, as a browser or a screen has: a shared httpx pool of
    # hundreds of connections costs the load generator more CPU than the servers.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S, verify=_PLAIN_HTTP
    ) as http:
        await _requests(http, headers, end, interval, result, offset)


async def _requests(
    http: httpx.AsyncClient, headers: dict[str, str], end: float, interval: float | None,
    result: LoadResult, offset: float,
) -> None:  # fmt: skip
    next_at = time.monotonic() + offset
    while time.monotonic() < end:
        if interval is not None:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        started = time.monotonic()
        try:
            response = await http.get("/api/machines", headers=headers)
        except httpx.HTTPError as exc:
            result.transport_errors += 1
            result.first_error = result.first_error or repr(exc)
            continue
        if response.status_code == 200:
            result.latencies.append(time.monotonic() - started)
        else:
            if response.status_code >= 500:
                result.server_errors += 1
            else:
                result.other_statuses += 1
            if not result.first_error:
                result.first_error = f"{response.status_code} {response.text[:200]}"


async def load(
    url: str, token: str | None, clients: int, seconds: float, interval: float | None
) -> LoadResult:
    """`clients` concurrent clients for `seconds` (bounded: the last answers are awaited at
    most REQUEST_TIMEOUT_S)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = LoadResult([], seconds)
    end = time.monotonic() + seconds
    started = time.monotonic()
    # Paced clients start spread over the interval, as independent screens are.
    spread = (interval or 0.0) / clients
    tasks = [_client(url, headers, end, interval, result, n * spread) for n in range(clients)]
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - started
    return result


# -- the run -----------------------------------------------------------------------------


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Python {python}"


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--paced-interval", type=float, default=1.0)
    parser.add_argument("--ingest-rate", type=float, default=5.0, help="events/s in all")
    parser.add_argument("--keep", type=Path, default=None, help="copy the server logs here")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        try:
            run(Path(tmp_name), args)
        finally:
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp_name).glob("*.log"):
                    shutil.copy(log, args.keep / log.name)


def run(tmp: Path, args: argparse.Namespace) -> None:
    database_url = args.database_url or f"sqlite:///{tmp / 'server.sqlite3'}"
    token = seed(database_url, args.machines)
    broker = MosquittoServer(tmp / "mosquitto")
    broker.start()
    fablab_port, peer_port = free_port(), free_port()
    server = start_fablab(database_url, broker.port, fablab_port, tmp / "server.log")
    machines = [f"m{n:03d}" for n in range(args.machines)]
    ingest = IngestTraffic(broker.port, machines, args.ingest_rate)
    peer = None
    try:
        wait_up(server, fablab_port, tmp / "server.log")
        ingest.start()
        fablab_url, peer_url = f"http://127.0.0.1:{fablab_port}", f"http://127.0.0.1:{peer_port}"
        headers = {"Authorization": f"Bearer {token}"}
        body = httpx.get(f"{fablab_url}/api/machines", headers=headers, timeout=60).content
        (tmp / "body.json").write_bytes(body)
        peer = start_peer(tmp / "body.json", peer_port, tmp / "peer.log")
        wait_up(peer, peer_port, tmp / "peer.log")
        print(f"machine: {_machine()}; load average before: {_load_average()}", flush=True)
        servers = (
            Target("fablab-monitor", fablab_url, token, server.pid),
            Target("bare FastAPI", peer_url, None, peer.pid),
        )
        rows = phases(args, servers, ingest)
    finally:
        ingest.stop()
        stop(server)
        if peer is not None:
            stop(peer)
        broker.stop()
    print(f"\nevents published {ingest.published}, acked {len(ingest.acked)}, "
          f"not acked at the end {len(ingest.sent_at)}; load average after: {_load_average()}")
    print("\n| server | clients | mode | req/s | p50 | p99 | max "
          "| errors 5xx / other / transport | server CPU per answer | acks in the phase |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str | None
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phases(
    args: argparse.Namespace, servers: tuple[Target, ...], ingest: IngestTraffic
) -> list[str]:
    """Ingest alone first, then every (clients, mode, server) phase; a Markdown row each."""
    server = servers[0]
    phase_start, cpu_start = time.monotonic(), cpu_seconds(server.pid)
    time.sleep(args.seconds)
    ingest_cpu = (cpu_seconds(server.pid) - cpu_start) / (time.monotonic() - phase_start)
    alone = _acks(ingest.between(phase_start, time.monotonic()))
    rows = [
        f"| ingest alone | 0 | no HTTP clients | — | — | — | — | — "
        f"| {ingest_cpu * 1000:.0f} ms per s | {alone} |"
    ]
    print(rows[-1], flush=True)
    modes = (("closed loop", None), (f"paced {args.paced_interval:g} s", args.paced_interval))
    for clients in args.clients:
        for mode, interval in modes:
            for target in servers:
                phase_start, cpu_start = time.monotonic(), cpu_seconds(target.pid)
                run_load = load(target.url, target.token, clients, args.seconds, interval)
                result = asyncio.run(run_load)
                result.server_cpu_s = cpu_seconds(target.pid) - cpu_start
                acks = ingest.between(phase_start, time.monotonic())
                rows.append(result.row(target.name, clients, mode, acks))
                error = f"  first error: {result.first_error}" if result.errors else ""
                print(f"{rows[-1]}{error} (load average {_load_average()})", flush=True)
    return rows


if __name__ == "__main__":
    main()
