"""Fleet: 1,000 simulated controllers (40 labs of 25 machines) on one server process.

    python bench/fleet.py [--sites 40] [--machines-per-site 25] [--workers 4]
                          [--duration 60] [--database-url URL]

Starts its own Mosquitto (password file and ACL written from the registered
controllers, as `fablab mosquitto-config` does; no connection limit, `set_tcp_nodelay`,
the file descriptor limit raised to the hard limit), a throwaway PostgreSQL cluster
(or uses `--database-url`, an empty database), registers the sites, machines,
controllers with their credentials, members, badges and trainings through the
server's own commands, then runs `fablab serve` (every site, one process) and the
controllers in `--workers` processes (bench/fleet_sim.py: paho's external loop, one
thread each).

Each controller opens sessions with its site's badges (5 % refused taps), sends a
heartbeat every 10 s while a session is open and its status every 10 s (as the
firmware re-announces it), busy on/off, ends sessions after 2 to 10
minutes; every event is kept until acked. After all controllers are connected and hold
a verified config, a 15 s warm-up, then a `--duration` s window measures:

- ack latency: an event's publish → the ack covering its seq (p50, p99, max);
- server CPU (% of one core) and RSS (max sampled each second, and the peak);
- the broker's and PostgreSQL's CPU, and the machine's load average;
- a training change touching every machine: one training type covers all machines; a
  manager grants it to a new member through the HTTP API (`POST /api/trainings`):
  time from the request to each controller holding a verified snapshot with the badge.

Prints a Markdown summary for docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import resource
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet_sim import ControllerSpec, Measures, run_worker  # noqa: E402
from protocol import Level  # noqa: E402
from tests.faults.harness import ServerProcess  # noqa: E402
from tests.fixtures import MosquittoServer  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

FLEET_TRAINING = "fleet-safety"
NEW_BADGE = "04F1EE7000"
MEMBERS_PER_SITE = 8


# -- registering the network ---------------------------------------------------------------


def register(url: str, sites: int, per_site: int) -> tuple[list[ControllerSpec], str]:
    """Sites, machines, controllers and credentials, members and trainings; returns the
    controllers and a manager's API token."""
    from server.adapters.migrations import upgrade
    from server.bootstrap import ServerRuntime
    from server.config import Settings
    from server.domain.access import Role
    from server.service_layer import commands as cmds

    upgrade(url)
    runtime = ServerRuntime(Settings(database_url=url), mqtt_enabled=False)
    bus = runtime.bus
    specs: list[ControllerSpec] = []
    try:
        for s in range(1, sites + 1):
            specs += _register_site(bus, f"lab{s:02d}", per_site)
            print(f"registered site {s} of {sites}", file=sys.stderr, flush=True)
        machines = tuple(spec.machine for spec in specs)
        bus.handle(cmds.AddTrainingType(FLEET_TRAINING, "Fleet safety", machines))
        bus.handle(cmds.AddMember("Nova", member_id="nova"))
        bus.handle(cmds.RegisterBadge("nova", NEW_BADGE))
        bus.handle(cmds.AddMember("Mona", member_id="mona"))
        bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
        token: str = bus.handle(cmds.CreateApiToken("mona", "fleet bench")).token
    finally:
        runtime.stop()
    return specs, token


def _register_site(bus: Any, site: str, per_site: int) -> list[ControllerSpec]:
    from server.service_layer import commands as cmds

    machines = [f"{site}-m{i:02d}" for i in range(1, per_site + 1)]
    issued = []
    for machine in machines:
        bus.handle(cmds.AddMachine(machine, machine.title(), site, heartbeat_interval_s=10))
        issued.append(bus.handle(cmds.IssueControllerCredentials(machine)))
    bus.handle(cmds.AddTrainingType(f"{site}-basics", f"{site} basics", tuple(machines)))
    badges = []
    for m in range(MEMBERS_PER_SITE):
        member_id, uid = f"{site}-p{m}", f"04{int(site[3:]):02X}{m:02X}A0B0"
        bus.handle(cmds.AddMember(member_id.title(), member_id=member_id))
        bus.handle(cmds.RegisterBadge(member_id, uid))
        bus.handle(cmds.GrantTraining(member_id, f"{site}-basics", Level.AUTONOMOUS))
        badges.append((uid, member_id))
    return [
        ControllerSpec(
            site, machine, c.controller_id, c.mqtt_username, c.mqtt_password, c.key_hex,
            tuple(badges),
        )
        for machine, c in zip(machines, issued, strict=True)
    ]


def broker_files(url: str, workdir: Path, server_password: str) -> list[str]:
    """The broker's password file and ACL from the registered controllers; config lines."""
    from server.adapters import mosquitto
    from server.adapters.secrets import mosquitto_password_hash
    from server.bootstrap import ServerRuntime
    from server.config import Settings

    runtime = ServerRuntime(Settings(database_url=url), mqtt_enabled=False)
    try:
        with runtime.new_uow() as uow:
            grants = [
                mosquitto.ControllerGrant(
                    c.id,
                    mosquitto.BrokerLogin(c.mqtt_username, c.mqtt_password_hash),
                    c.machine.site,
                    c.machine_id,
                )
                for c in uow.controllers.all()
                if c.mqtt_username and c.mqtt_password_hash
            ]
    finally:
        runtime.stop()
    server = mosquitto.BrokerLogin("fablab-server", mosquitto_password_hash(server_password))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "passwd").write_text(mosquitto.render_passwd(server, grants))
    (workdir / "acl").write_text(mosquitto.render_acl(server.username, grants))
    # Started as root, Mosquitto drops to its own user, which cannot read our temp
    # folder: a loopback-only bench broker stays root.
    return ["user root"] * (os.geteuid() == 0) + [
        f"password_file {workdir / 'passwd'}",
        f"acl_file {workdir / 'acl'}",
        "max_connections -1",
        "set_tcp_nodelay true",
        "max_queued_messages 50000",  # as `fablab mosquitto-config` writes it
    ]


# -- measuring processes -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def postgres_pids(cluster: PostgresCluster | None) -> list[int]:
    """The postmaster of our own cluster and its children (other clusters run here too)."""
    if cluster is None:
        return []
    pid_file = cluster.data_dir / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


class RssSampler(threading.Thread):
    """The server's RSS every second; `peak` the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return


# -- the run -------------------------------------------------------------------------------


@dataclass
class Workers:
    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]

    def ask(self, *command: object) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]

    def tell(self, *command: object) -> None:
        for pipe in self.pipes:
            pipe.send(command)

    def total(self, key: str) -> int:
        return sum(status[key] for status in self.ask("status"))

    def wait_until(self, key: str, wanted: int, timeout: float) -> float:
        """Seconds until the workers' `key` count reaches `wanted` (or the timeout)."""
        started = time.time()
        while time.time() - started < timeout:
            if self.total(key) >= wanted:
                break
            time.sleep(0.05)
        return time.time() - started


def start_workers(specs: list[ControllerSpec], count: int, broker: MosquittoServer) -> Workers:
    context = multiprocessing.get_context("spawn")
    processes, pipes = [], []
    for i in range(count):
        mine, theirs = context.Pipe()
        share = specs[i::count]
        process = context.Process(target=run_worker, args=(share, broker.host, broker.port, theirs),
                                  daemon=True)  # fmt: skip
        process.start()
        processes.append(process)
        pipes.append(mine)
    return Workers(processes, pipes)


def grant_everywhere(http_port: int, token: str, workers: Workers, total: int) -> dict[str, float]:
    """Grant the fleet-wide training to a new member; when each controller had it."""
    workers.tell("watch", NEW_BADGE)
    time.sleep(0.5)  # the workers read their pipe within a loop turn
    body = {"member_id": "nova", "training_type_id": FLEET_TRAINING, "level": "autonomous"}
    started = time.time()
    response = httpx.post(f"http://127.0.0.1:{http_port}/api/trainings", json=body,
                          headers={"Authorization": f"Bearer {token}"}, timeout=120)  # fmt: skip
    answered = time.time()
    response.raise_for_status()
    workers.wait_until("reached", total, timeout=120)
    reached: dict[str, float] = {}
    for measures, _status in workers.ask("report"):
        reached.update(measures.reached)
    times = sorted(t - started for t in reached.values())
    return {
        "api_answer_s": answered - started,
        "reached": len(times),
        "p50_s": times[len(times) // 2] if times else float("nan"),
        "all_s": times[-1] if len(times) == total else float("nan"),
        "last_s": times[-1] if times else float("nan"),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def merge(reports: list[tuple[Measures, dict[str, int]]]) -> Measures:
    merged = Measures()
    for measures, _status in reports:
        merged.ack_latencies += measures.ack_latencies
        merged.slow += measures.slow
        merged.counts.update(measures.counts)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--machines-per-site", type=int, default=25)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop what we started
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the broker
    tmp = Path(tempfile.mkdtemp(prefix="fablab-fleet-"))
    cluster = None if args.database_url else PostgresCluster()
    try:
        if cluster is not None:
            cluster.start()
        run(args, tmp, cluster, args.database_url or (cluster.url if cluster else ""))
    finally:
        if cluster is not None:
            cluster.stop()


def run(args: argparse.Namespace, tmp: Path, cluster: PostgresCluster | None, url: str) -> None:
    total = args.sites * args.machines_per_site
    began = time.time()
    specs, token = register(url, args.sites, args.machines_per_site)
    print(f"registered {total} machines and controllers in {time.time() - began:.0f} s",
          file=sys.stderr)  # fmt: skip
    server_password = uuid.uuid4().hex
    broker_config = broker_files(url, tmp / "broker", server_password)
    broker = MosquittoServer(tmp / "broker", anonymous=False, extra_config=broker_config)
    broker.start()
    server = ServerProcess(tmp / "server", database_url=url, broker_url=broker.url, site="lab01")
    server.env.update({"FABLAB_MQTT_ALL_SITES": "true", "FABLAB_MQTT_USERNAME": "fablab-server",
                       "FABLAB_MQTT_PASSWORD": server_password})  # fmt: skip
    server.start()
    workers = start_workers(specs, args.workers, broker)
    try:
        measure(args, total, broker, server, workers, cluster, token)
    finally:
        with contextlib.suppress(OSError, EOFError):
            workers.ask("stop")
        server.stop()
        broker.stop()


def measure(
    args: argparse.Namespace, total: int, broker: MosquittoServer, server: ServerProcess,
    workers: Workers, cluster: PostgresCluster | None, token: str,
) -> None:  # fmt: skip
    assert server.process is not None and broker._process is not None
    server_pid, broker_pid = server.process.pid, broker._process.pid
    connect_s = workers.wait_until("connected", total, timeout=300)
    configured_s = workers.wait_until("configured", total, timeout=300)
    time.sleep(15)  # warm-up: every controller taps within its first 10 s
    sampler = RssSampler(server_pid)
    sampler.start()
    pg = postgres_pids(cluster)
    cpu0 = (total_cpu([server_pid]), total_cpu([broker_pid]), total_cpu(pg), time.time())
    load0 = os.getloadavg()
    window = (time.time(), time.time() + args.duration)
    workers.tell("window", *window)
    time.sleep(args.duration)
    cpu1 = (total_cpu([server_pid]), total_cpu([broker_pid]), total_cpu(pg), time.time())
    load1 = os.getloadavg()
    grant = grant_everywhere(server.http_port, token, workers, total)
    time.sleep(12)  # the window's last events are acked (or resent and acked)
    sampler.stopped.set()
    merged = merge(workers.ask("report"))
    status = {k: sum(s[k] for s in workers.ask("status")) for k in ("connected", "pending")}
    elapsed = cpu1[3] - cpu0[3]
    report(args, total, merged, status, grant, {
        "connect_s": connect_s, "configured_s": connect_s + configured_s,
        "server_cpu": (cpu1[0] - cpu0[0]) / elapsed * 100,
        "broker_cpu": (cpu1[1] - cpu0[1]) / elapsed * 100,
        "postgres_cpu": (cpu1[2] - cpu0[2]) / elapsed * 100 if pg else float("nan"),
        "rss_max": sampler.peak, "rss_peak": rss_mb(server_pid, "VmHWM"),
        "load": (load0[0], load1[0]), "window": window,
    })  # fmt: skip


def report(
    args: argparse.Namespace, total: int, merged: Measures, status: dict[str, int],
    grant: dict[str, float], figures: dict[str, Any],
) -> None:  # fmt: skip
    lat = merged.ack_latencies
    counts = merged.counts
    sent = sum(v for k, v in counts.items() if k.startswith("sent_"))
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"Fleet: {args.sites} sites x {args.machines_per_site} machines = {total} "
          f"controllers in {args.workers} processes; window {args.duration:.0f} s; "
          f"load average {figures['load'][0]:.1f} → {figures['load'][1]:.1f}\n")
    print("| measure | value | target |\n| --- | --- | --- |")
    rows = [
        ("controllers connected / holding a verified config",
         f"{total} in {figures['connect_s']:.1f} s / {figures['configured_s']:.1f} s", ""),
        ("events sent in the window / acked by the end",
         f"{counts['window_sent']} ({counts['window_sent'] / args.duration:.0f} /s) / "
         f"{len(lat)}", ""),
        ("ack latency p50", f"{percentile(lat, 0.5) * 1000:.1f} ms", ""),
        ("ack latency p99", f"{percentile(lat, 0.99) * 1000:.1f} ms", "≤ 100 ms"),
        ("ack latency max", f"{max(lat, default=float('nan')) * 1000:.1f} ms", ""),
        ("server CPU (one core = 100 %)", f"{figures['server_cpu']:.0f} %", ""),
        ("server RSS max (sampled) / peak", f"{figures['rss_max']:.0f} / "
         f"{figures['rss_peak']:.0f} MB", "≤ 300 MB"),
        ("Mosquitto CPU / PostgreSQL CPU", f"{figures['broker_cpu']:.0f} % / "
         f"{figures['postgres_cpu']:.0f} %", ""),
        ("training change: API answer", f"{grant['api_answer_s']:.2f} s", ""),
        ("training change: reached p50 / all", f"{grant['p50_s']:.2f} s / "
         f"{grant['all_s']:.2f} s ({grant['reached']:.0f} of {total})", "all ≤ 5 s"),
        ("events sent / resent / still unacked at the end",
         f"{sent} / {counts['resent']} / {status['pending']}", ""),
        ("disconnects / configs refused",
         f"{counts['disconnects']} / "
         f"{sum(v for k, v in counts.items() if k.startswith('config_refused'))}", ""),
    ]  # fmt: skip
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    print_slow(merged, figures["window"][0])


def print_slow(merged: Measures, window_start: float) -> None:
    """When the slow acks (over 1 s) were sent, and whether they needed a resend."""
    slow = merged.slow
    if not slow:
        return
    resent = sum(1 for _s, _l, r in slow if r)
    print(f"\nacks over 1 s: {len(slow)}, of which resent before their ack: {resent}")
    by_second: dict[int, list[float]] = {}
    for sent, latency, _r in slow:
        by_second.setdefault(int(sent - window_start), []).append(latency)
    for second, latencies in sorted(by_second.items()):
        print(f"  sent at +{second:3d} s: {len(latencies):4d} events, "
              f"latency {min(latencies):.1f}-{max(latencies):.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
