"""The fault harness: real processes, a scripted workload whose log is the truth, checks.

- ServerProcess: ``fablab serve`` as a child process (kill -9 and restart at will).
- ControllerProcess: one controller process (tests/faults/controller_proc.py), driven
  through its stdin, logging relay changes as JSON lines.
- BrokerTap: a paho client that records every event the controllers publish and every
  ack the server sends (the acks the controllers act upon).
- Workload: taps, ends, busy changes and crashes with their wall times: the truth.
- check_*: what every scenario must show afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import select
from sqlalchemy.engine import Engine

from protocol import Ack, Level, subscription_filter
from protocol.topics import TopicKind
from tests.fixtures import free_port, wait_for_port

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOLERANCE_S = 1.0  # start and end of a recorded session vs the workload's truth
HEARTBEAT_S = 5  # the smallest heartbeat interval the server accepts
FORGED_PREFIX = "forged"  # outbox ids of streams the harness invents


class ScenarioError(AssertionError):
    """A check of a scenario failed; the message says which and how."""


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> Any:
    """Poll until `predicate()` is truthy (returned); ScenarioError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# -- the lab -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineSpec:
    machine_id: str
    controller_id: str
    key_hex: str


@dataclass(frozen=True)
class MemberSpec:
    member_id: str
    badge: str
    machines: tuple[str, ...]  # trained (autonomous) on these


def seed_lab(
    database_url: str, site: str, machines: Sequence[MachineSpec], members: Sequence[MemberSpec]
) -> None:
    """Migrate the database and register machines, members, badges and trainings."""
    from server.adapters.migrations import upgrade
    from server.bootstrap import ServerRuntime
    from server.config import Settings
    from server.service_layer import commands as cmds

    upgrade(database_url)
    runtime = ServerRuntime(Settings(database_url=database_url, site=site), mqtt_enabled=False)
    try:
        bus = runtime.bus
        for m in machines:
            bus.handle(
                cmds.AddMachine(
                    m.machine_id, m.machine_id.title(), site,
                    heartbeat_interval_s=HEARTBEAT_S,
                    controller_id=m.controller_id, key_hex=m.key_hex,
                )
            )  # fmt: skip
        for member in members:
            bus.handle(cmds.AddMember(member.member_id.title(), member_id=member.member_id))
            bus.handle(cmds.RegisterBadge(member.member_id, member.badge))
            for machine in set(member.machines) & {m.machine_id for m in machines}:
                bus.handle(cmds.GrantTraining(member.member_id, machine, Level.AUTONOMOUS))
    finally:
        runtime.stop()


class ServerProcess:
    """`fablab serve` in a child process: MQTT ingest and the API, on the given database."""

    def __init__(self, workdir: Path, *, database_url: str, broker_url: str, site: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "FABLAB_DATABASE_URL": database_url,
            "FABLAB_MQTT_URL": broker_url,
            "FABLAB_SITE": site,
            "FABLAB_MQTT_CLIENT_ID": f"fablab-server-{site}",
            "FABLAB_HTTP_PORT": str(self.http_port),
            "FABLAB_DATA_DIR": str(workdir),
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from server.cli import app; app()", "serve"],
                cwd=self.workdir,  # no stray .env of the repository
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port("127.0.0.1", self.http_port, timeout, alive=lambda: self.running):
            raise ScenarioError(f"server did not start; log:\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ControllerProcess:
    """One controller process (tests/faults/controller_proc.py) and its data directory."""

    def __init__(
        self, workdir: Path, spec: MachineSpec, *, site: str, broker_url: str,
        extra_config: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "controller.log"
        self.config_path = workdir / "config.toml"
        self.site = site
        self.broker_url = broker_url
        self.extra_config = dict(extra_config or {})
        self.process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.starts = 0
        self.write_config()

    @property
    def machine(self) -> str:
        return self.spec.machine_id

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "snapshot.json"

    def write_config(self) -> None:
        values: dict[str, Any] = {
            "controller_id": self.spec.controller_id,
            "site": self.site,
            "machine": self.spec.machine_id,
            "broker_url": self.broker_url,
            "key_hex": self.spec.key_hex,
            "data_dir": str(self.data_dir),
            "reader": "simulated",
            "auth_timeout_s": 0,
            **self.extra_config,
        }
        lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        self._lines = queue.Queue()
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.controller_proc", str(self.config_path)],
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        # Each process gets its own queue: the pump of a killed process may still put its
        # end-of-output marker after the next process has started.
        threading.Thread(
            target=self._pump, args=(self.process, self._lines), daemon=True
        ).start()
        self.starts += 1
        reply = self._reply(timeout)
        if reply.get("ok") != "started":
            raise ScenarioError(f"controller {self.machine} did not start: {reply}")

    @staticmethod
    def _pump(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ScenarioError(
                f"controller {self.machine} did not answer in {timeout} s"
            ) from None
        if line is None:
            tail = self.log_tail()
            last = tail.splitlines()[-1] if tail else ""
            raise ScenarioError(f"controller {self.machine} exited ({last}); log:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, line: str, timeout: float = 15.0) -> dict[str, Any]:
        if not self.running:
            raise ScenarioError(f"controller {self.machine} is not running")
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._reply(timeout)

    def status(self) -> dict[str, Any]:
        return self.command("status")

    def kill9(self) -> float:
        """SIGKILL now; returns the wall time of the kill."""
        assert self.process is not None
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return at

    def stop(self) -> None:
        if not self.running:
            return
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(5)

    def open_session_on_disk(self) -> tuple[str, float] | None:
        """(session id, last heartbeat wall) the outbox holds (only while not running)."""
        db = sqlite3.connect(self.outbox_path)
        try:
            row = db.execute("SELECT session_id, last_wall FROM open_session").fetchone()
        finally:
            db.close()
        return (str(row[0]), float(row[1])) if row else None

    def relay_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by kill -9, or a non-JSON line
            if isinstance(record, dict) and "relay" in record:
                records.append(record)
        return records

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- what crosses the broker ---------------------------------------------------------------


@dataclass(frozen=True)
class SeenEvent:
    controller_id: str
    outbox_id: str
    seq: int
    event_id: str
    kind: str


class BrokerTap:
    """Records the controllers' events and the server's acks, as the broker carries them.

    A persistent session (clean_session=False) with QoS 1, so that what is published while
    the tap reconnects after a broker restart is still delivered to it.
    """

    def __init__(self, host: str, port: int, site: str) -> None:
        self.site = site
        self.acks: list[tuple[float, Ack]] = []
        self.events: dict[tuple[str, str, int], set[str]] = {}
        self.event_kinds: dict[str, str] = {}
        self.forged: set[bytes] = set()  # payloads the harness itself published
        self.genuine_raw: list[tuple[str, bytes]] = []  # (topic, payload) of controllers
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"faults-tap-{site}",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._connected = threading.Event()
        self._client.connect_async(host, port, keepalive=10)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise ScenarioError("broker tap could not connect")

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        client.subscribe(subscription_filter(TopicKind.ACK, self.site), qos=1)
        client.subscribe(subscription_filter(TopicKind.EVENTS, self.site), qos=1)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        with self._lock:
            if message.topic.endswith("/ack"):
                try:
                    self.acks.append((time.time(), Ack.decode(payload)))
                except Exception:
                    logger.warning("unreadable ack on %s: %r", message.topic, payload[:200])
                return
            if payload in self.forged:
                return
            try:
                event = json.loads(payload)
                key = (str(event["controller_id"]), str(event["outbox_id"]), int(event["seq"]))
                event_id = str(event["event_id"])
            except Exception:
                return  # garbage (the corpus scenario publishes some)
            self.genuine_raw.append((message.topic, payload))
            self.events.setdefault(key, set()).add(event_id)
            self.event_kinds[event_id] = str(event.get("kind"))

    def snapshot(self) -> tuple[list[Ack], dict[tuple[str, str, int], set[str]]]:
        with self._lock:
            return [a for _, a in self.acks], {k: set(v) for k, v in self.events.items()}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- the truth -----------------------------------------------------------------------------


@dataclass
class TruthSession:
    machine: str
    controller_id: str
    member: str
    badge: str
    start: float
    session_id: str | None = None
    end: float | None = None
    end_reason: str | None = None  # "badge" or "controller_restart"
    killed_at: float | None = None


@dataclass
class Workload:
    """Drives the controllers and writes down what it did, with wall times: the truth."""

    log_path: Path
    sessions: list[TruthSession] = field(default_factory=list)
    open: dict[str, TruthSession] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, **fields: Any) -> None:
        """Write one entry of the truth (several floor threads write at once)."""
        entry = {"kind": kind, "wall": time.time(), **fields}
        with self._lock, self.log_path.open("a") as fh:
            self.log.append(entry)
            fh.write(json.dumps(entry) + "\n")

    def start_session(self, controller: ControllerProcess, member: MemberSpec) -> TruthSession:
        assert controller.machine not in self.open, "one session per machine at a time"
        reply = controller.command(f"tap {member.badge}")
        truth = TruthSession(
            controller.machine, controller.spec.controller_id, member.member_id, member.badge,
            start=reply["wall"],
        )  # fmt: skip
        self.note("tap_start", machine=controller.machine, member=member.member_id,
                  at=reply["wall"])
        status = wait_for(
            lambda: (s := controller.status())["relay"] and s, 10,
            f"relay on for {member.member_id} on {controller.machine}",
        )
        truth.session_id = status["session_id"]
        self.note("session_on", machine=controller.machine, session_id=truth.session_id)
        self.sessions.append(truth)
        self.open[controller.machine] = truth
        return truth

    def end_session(self, controller: ControllerProcess) -> TruthSession:
        truth = self.open.pop(controller.machine)
        reply = controller.command(f"tap {truth.badge}")
        truth.end, truth.end_reason = reply["wall"], "badge"
        self.note("tap_end", machine=controller.machine, member=truth.member, at=reply["wall"])
        wait_for(lambda: not controller.status()["relay"], 10,
                 f"relay off on {controller.machine}")
        return truth

    def busy(self, controller: ControllerProcess, on: bool) -> None:
        reply = controller.command(f"busy {'on' if on else 'off'}")
        self.note("busy", machine=controller.machine, on=on, at=reply["wall"])

    def crash(self, controller: ControllerProcess, *, restart: bool = True) -> None:
        """kill -9 the controller; its open session must close at its last heartbeat."""
        killed_at = controller.kill9()
        self.note("kill9_controller", machine=controller.machine, at=killed_at)
        truth = self.open.pop(controller.machine, None)
        if truth is not None:
            truth.killed_at = killed_at
            truth.end_reason = "controller_restart"
            on_disk = controller.open_session_on_disk()
            if on_disk is None or on_disk[0] != truth.session_id:
                raise ScenarioError(
                    f"after kill -9 the outbox of {controller.machine} does not hold the open "
                    f"session {truth.session_id} (holds {on_disk})"
                )
            truth.end = on_disk[1]  # its last heartbeat, as the controller stored it
        if restart:
            controller.start()
            self.note("restart_controller", machine=controller.machine)


# -- checks --------------------------------------------------------------------------------


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def db_sessions(engine: Engine, machines: Iterable[str]) -> list[Any]:
    from sqlalchemy.orm import Session

    from server.adapters.orm import UsageSession

    with Session(engine) as db:
        rows = db.scalars(select(UsageSession).where(UsageSession.machine_id.in_(list(machines))))
        return [
            {
                "id": r.id, "machine": r.machine_id, "controller": r.controller_id,
                "member": r.member_id, "start": _ts(r.started_at), "end": _ts(r.ended_at),
                "end_reason": r.end_reason, "elapsed": r.elapsed_seconds, "busy": r.busy_seconds,
            }
            for r in rows
        ]  # fmt: skip


def check_sessions(
    engine: Engine, workload: Workload, machines: Iterable[str], forged: Iterable[str] = ()
) -> list[str]:
    """Every truth session recorded exactly once, by its machine, start/end within 1 s.

    `forged`: session ids that only the harness's own hostile publisher used (a session
    made up on a controller's topic is indistinguishable from a real one at the server;
    those that reuse a real session's id are checked as that session).
    """
    problems: list[str] = []
    skip = set(forged)
    rows = db_sessions(engine, machines)
    by_id = {r["id"]: r for r in rows}
    matched: set[str] = set()
    truth_ids = {t.session_id for t in workload.sessions}
    for truth in workload.sessions:
        row = by_id.get(truth.session_id or "")
        label = f"session {truth.session_id} ({truth.member} on {truth.machine})"
        if row is None:
            problems.append(f"{label}: not recorded")
            continue
        matched.add(row["id"])
        twins = [
            r for r in rows
            if r["id"] not in truth_ids and r["machine"] == truth.machine
            and r["member"] == truth.member and r["start"] is not None
            and abs(r["start"] - truth.start) <= TOLERANCE_S
        ]  # fmt: skip
        if twins:
            problems.append(f"{label}: recorded more than once ({[t['id'] for t in twins]})")
        if (row["machine"], row["controller"]) != (truth.machine, truth.controller_id):
            problems.append(f"{label}: recorded for {row['machine']}/{row['controller']}")
        if row["member"] != truth.member:
            problems.append(f"{label}: recorded for member {row['member']}")
        if row["start"] is None or abs(row["start"] - truth.start) > TOLERANCE_S:
            problems.append(f"{label}: starts at {row['start']}, truth {truth.start:.3f}")
        if truth.end is None:
            continue
        if row["end_reason"] != truth.end_reason:
            problems.append(f"{label}: ended {row['end_reason']}, truth {truth.end_reason}")
        if row["end"] is None or abs(row["end"] - truth.end) > TOLERANCE_S:
            problems.append(f"{label}: ends at {row['end']}, truth {truth.end:.3f}")
        if truth.end_reason == "badge":
            problems += _check_totals(label, row, truth, workload)
        if truth.killed_at is not None and not (
            truth.killed_at - HEARTBEAT_S - TOLERANCE_S <= truth.end <= truth.killed_at
        ):
            problems.append(
                f"{label}: last heartbeat {truth.end:.3f} is not within one interval before "
                f"the kill at {truth.killed_at:.3f}"
            )
    for row in rows:
        if row["id"] not in matched and row["id"] not in skip:
            problems.append(f"session {row['id']} on {row['machine']} was never performed: {row}")
    return problems


def _check_totals(
    label: str, row: dict[str, Any], truth: TruthSession, workload: Workload
) -> list[str]:
    """Elapsed time within 1 s of the truth; busy time within 1 s plus polling slack."""
    assert truth.end is not None
    problems = []
    elapsed = truth.end - truth.start
    if abs(row["elapsed"] - elapsed) > TOLERANCE_S:
        problems.append(f"{label}: elapsed {row['elapsed']:.1f} s, truth {elapsed:.1f} s")
    changes = [
        (e["at"], bool(e["on"])) for e in workload.log
        if e["kind"] == "busy" and e["machine"] == truth.machine
        and truth.start <= e["at"] <= truth.end
    ]  # fmt: skip
    busy_s, busy, since = 0.0, False, truth.start
    for at, on in sorted(changes):
        if on and not busy:
            since = at
        elif busy and not on:
            busy_s += at - since
        busy = on
    if busy:
        busy_s += truth.end - since
    # The controller polls its busy input every main-loop iteration (about 50 ms).
    slack = TOLERANCE_S + 0.1 * len(changes)
    if abs(row["busy"] - busy_s) > slack:
        problems.append(f"{label}: busy {row['busy']:.1f} s, truth {busy_s:.1f} s")
    return problems


def db_stream_events(engine: Engine) -> dict[tuple[str, str, int], str | None]:
    from sqlalchemy.orm import Session

    from server.adapters.orm import RawEvent

    with Session(engine) as db:
        rows = db.execute(
            select(RawEvent.controller_id, RawEvent.outbox_id, RawEvent.seq, RawEvent.event_id)
            .where(RawEvent.seq.is_not(None))
        ).all()
    stored: dict[tuple[str, str, int], str | None] = {}
    for controller_id, outbox_id, seq, event_id in rows:
        stored.setdefault((controller_id, outbox_id, seq), event_id)
    return stored


def check_acks(engine: Engine, tap: BrokerTap, controllers: Iterable[str]) -> list[str]:
    """Every seq covered by an ack the broker carried is stored, as the event it was."""
    problems: list[str] = []
    wanted = set(controllers)
    acks, published = tap.snapshot()
    stored = db_stream_events(engine)
    highest: dict[tuple[str, str], int] = {}
    for ack in acks:
        if ack.controller_id in wanted:
            key = (ack.controller_id, ack.outbox_id)
            highest[key] = max(highest.get(key, 0), ack.up_to_seq)
    for (controller_id, outbox_id), up_to in sorted(highest.items()):
        if outbox_id.startswith(FORGED_PREFIX):
            continue  # a stream the harness made up (hostile input scenarios)
        missing = [s for s in range(1, up_to + 1) if (controller_id, outbox_id, s) not in stored]
        if missing:
            problems.append(
                f"{controller_id}/{outbox_id}: acked up to {up_to} but seqs {missing[:10]} "
                "are not stored"
            )
        for seq in range(1, up_to + 1):
            genuine = published.get((controller_id, outbox_id, seq))
            held = stored.get((controller_id, outbox_id, seq))
            if genuine and held is not None and held not in genuine:
                problems.append(
                    f"{controller_id}/{outbox_id} seq {seq}: acked, but the server holds event "
                    f"{held} instead of the controller's {sorted(genuine)}"
                )
    return problems


def check_relays(controllers: Iterable[ControllerProcess], workload: Workload) -> list[str]:
    """The relay went on only for a session of the truth, with a valid grant held."""
    problems: list[str] = []
    truth_ids = {t.session_id: t for t in workload.sessions}
    for controller in controllers:
        for record in controller.relay_records():
            if not record.get("relay"):
                continue
            session_id = record.get("session_id")
            where = f"{controller.machine} at {record.get('wall')}"
            if not record.get("grant_ok"):
                problems.append(f"relay on without a valid grant on {where}: {record}")
            truth = truth_ids.get(session_id)
            if truth is None:
                problems.append(f"relay on for session {session_id} nobody started, {where}")
            elif abs(float(record["wall"]) - truth.start) > TOLERANCE_S:
                problems.append(f"relay on at {where}, the tap was at {truth.start:.3f}")
    return problems


def wait_drained(controllers: Iterable[ControllerProcess], timeout: float) -> None:
    """Every controller's outbox is empty: the server acked everything it sent."""
    for controller in controllers:
        wait_for(lambda c=controller: c.status()["pending"] == 0, timeout,  # type: ignore[misc]
                 f"outbox of {controller.machine} drained")


def assert_no_problems(problems: Sequence[str]) -> None:
    if problems:
        raise ScenarioError(f"{len(problems)} problem(s):\n- " + "\n- ".join(problems[:30]))
