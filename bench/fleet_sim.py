"""Many simulated controllers in one process, for bench/fleet.py.

Each controller is a paho client speaking the real protocol: `protocol/` topics and
payloads, a retained birth and an `offline` last will, the signed config verified with
its own key (a stale or badly signed one refused), events with a per-controller outbox
seq kept until the server's cumulative ack covers them (resent as the firmware does).
All clients of a process run on one thread: paho's external-loop API (`loop_read`,
`loop_write`, `loop_misc`) driven by one `selectors` loop, plus a timer heap for the
workload. The main process steers a worker through a `multiprocessing` pipe.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import selectors
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt

from protocol import (
    Ack,
    ControllerState,
    ControllerStatus,
    DenyReason,
    EndReason,
    Event,
    EventKind,
    PermissionSnapshot,
    ProtocolError,
    badge_digest,
    config_topic,
    verify_config,
)
from protocol.topics import ack_topic, command_topic, events_topic, status_topic

HEARTBEAT_S = 10.0
# The firmware's outbox rule (firmware_pi/app.py): while the oldest unacked event does
# not move, resend the oldest RESEND_WINDOW after 10 s, then after 20, 40… up to 320 s.
RESEND_AFTER_S = 10.0
RESEND_MAX_S = 320.0
RESEND_WINDOW = 100
FIRMWARE = "fleet-bench"


@dataclass(frozen=True)
class ControllerSpec:
    """One registered controller and the badges of its site's trained members."""

    site: str
    machine: str
    controller_id: str
    username: str
    password: str
    key_hex: str
    badges: tuple[tuple[str, str], ...]  # (uid, member_id)


@dataclass
class Measures:
    """What one worker observed; merged by the main process."""

    ack_latencies: list[float] = field(default_factory=list)  # s, events sent in the window
    # (sent wall time, latency s, resends before its ack) of window events acked after 1 s
    slow: list[tuple[float, float, int]] = field(default_factory=list)
    reached: dict[str, float] = field(default_factory=dict)  # controller → wall time
    counts: Counter[str] = field(default_factory=Counter)


class SimController:
    """One simulated controller: its paho client, its outbox and its workload state."""

    def __init__(self, spec: ControllerSpec, fleet: Fleet) -> None:
        self.spec = spec
        self.fleet = fleet
        self.key = bytes.fromhex(spec.key_hex)
        self.outbox_id = uuid.uuid4().hex[:16]
        self.boot_id = uuid.uuid4().hex[:16]
        self.seq = 0
        self.pending: dict[int, tuple[float, bytes]] = {}  # seq → (sent at, payload)
        self.resends: Counter[int] = Counter()  # seq → times resent
        self.oldest: tuple[int, float] | None = None  # oldest unacked seq, since when
        self.resend_after_s = RESEND_AFTER_S
        self.snapshot: PermissionSnapshot | None = None
        self.session: tuple[str, float] | None = None  # (session id, started wall)
        self.busy_since: float | None = None
        self.busy_total = 0.0
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        spec = self.spec
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=spec.controller_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        client.username_pw_set(spec.username, spec.password)
        client.will_set(status_topic(spec.site, spec.machine),
                        self._status(ControllerState.OFFLINE), qos=1, retain=True)  # fmt: skip
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_socket_open = self.fleet.socket_opened
        client.on_socket_close = self.fleet.socket_closed
        client.on_socket_register_write = self.fleet.want_write
        client.on_socket_unregister_write = self.fleet.wrote
        client.user_data_set(self)
        return client

    def _status(self, state: ControllerState) -> bytes:
        return ControllerStatus(
            self.spec.controller_id, state, FIRMWARE, self.boot_id, time.time()
        ).encode()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.fleet.measures.counts["connect_refused"] += 1
            return
        self.fleet.measures.counts["connects"] += 1
        s = self.spec
        for topic in (config_topic(s.site, s.machine), ack_topic(s.site, s.machine),
                      command_topic(s.site, s.machine)):  # fmt: skip
            client.subscribe(topic, qos=1)
        client.publish(status_topic(s.site, s.machine), self._status(ControllerState.ONLINE),
                       qos=1, retain=True)  # fmt: skip
        for _sent, payload in self.pending.values():  # a new connection: resend the outbox
            client.publish(events_topic(s.site, s.machine), payload, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/config"):
            self._on_config(bytes(message.payload))
        elif message.topic.endswith("/ack"):
            self._on_ack(bytes(message.payload))

    def _on_config(self, payload: bytes) -> None:
        held = self.snapshot.version if self.snapshot else None
        try:
            snapshot = verify_config(payload, self.key, held_version=held)
        except ProtocolError as exc:
            self.fleet.measures.counts[f"config_refused_{type(exc).__name__}"] += 1
            return
        first = self.snapshot is None
        self.snapshot = snapshot
        self.fleet.measures.counts["configs"] += 1
        if first:
            self.fleet.schedule(random.uniform(0, HEARTBEAT_S), self.tap)
            self.fleet.schedule(random.uniform(0, HEARTBEAT_S), self.announce)
        watched = self.fleet.watched_uid
        reached = self.fleet.measures.reached
        if (
            watched
            and self.spec.controller_id not in reached
            and snapshot.lookup(badge_digest(self.key, watched)) is not None
        ):
            reached[self.spec.controller_id] = time.time()

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except ProtocolError:
            self.fleet.measures.counts["ack_unreadable"] += 1
            return
        if ack.outbox_id != self.outbox_id:
            return
        now = time.time()
        for seq in [s for s in self.pending if s <= ack.up_to_seq]:
            sent, _payload = self.pending.pop(seq)
            self.fleet.acked(sent, now, self.resends.pop(seq, 0))

    def announce(self) -> None:
        """`online` again every heartbeat interval, sessions or not, as the firmware does
        (firmware_pi/app.py `_announce_status`): the server's liveness signal."""
        if self.client.is_connected():
            topic = status_topic(self.spec.site, self.spec.machine)
            status = self._status(ControllerState.ONLINE)
            self.client.publish(topic, status, qos=1, retain=True)
            self.fleet.measures.counts["statuses"] += 1
        self.fleet.schedule(HEARTBEAT_S, self.announce)

    # -- the workload -------------------------------------------------------------------

    def emit(self, kind: EventKind, **data: object) -> None:
        """Publish the next event of the outbox; it stays pending until acked."""
        self.seq += 1
        now = time.time()
        payload = Event(
            event_id=uuid.uuid4().hex, controller_id=self.spec.controller_id,
            outbox_id=self.outbox_id, seq=self.seq, boot_id=self.boot_id, wall_time=now,
            mono_time=time.monotonic(), kind=kind, data=dict(data),
        ).encode()  # fmt: skip
        self.pending[self.seq] = (now, payload)
        self.fleet.measures.counts[f"sent_{kind.value}"] += 1
        if self.fleet.window[0] <= now <= self.fleet.window[1]:
            self.fleet.measures.counts["window_sent"] += 1
        self.client.publish(events_topic(self.spec.site, self.spec.machine), payload, qos=1)

    def tap(self) -> None:
        """A badge on the reader: end the open session, else start one (or be refused)."""
        if self.session is not None:
            self._end_session()
            self.fleet.schedule(random.uniform(5, 30), self.tap)
            return
        assert self.snapshot is not None
        if random.random() < 0.05:
            self.emit(EventKind.BADGE_DENIED, badge_uid="04DEAD00" + f"{random.randrange(256):02X}",
                      reason=DenyReason.UNKNOWN_BADGE.value)  # fmt: skip
            self.fleet.schedule(random.uniform(5, 20), self.tap)
            return
        uid, member_id = random.choice(self.spec.badges)
        entry = self.snapshot.lookup(badge_digest(self.key, uid))
        if entry is None:
            self.emit(EventKind.BADGE_DENIED, badge_uid=uid, member_id=member_id,
                      reason=DenyReason.NOT_TRAINED.value)  # fmt: skip
            self.fleet.schedule(random.uniform(5, 20), self.tap)
            return
        self._start_session(uid, entry.member_id, entry.level.value)

    def _start_session(self, uid: str, member_id: str, level: str) -> None:
        assert self.snapshot is not None
        session_id = uuid.uuid4().hex
        self.session = (session_id, time.time())
        self.busy_total, self.busy_since = 0.0, None
        self.emit(
            EventKind.SESSION_STARTED, session_id=session_id, badge_uid=uid,
            member_id=member_id, level=level, snapshot_version=self.snapshot.version,
        )  # fmt: skip
        self.fleet.schedule(HEARTBEAT_S, self._heartbeat, session_id)
        self.fleet.schedule(random.uniform(5, 40), self._toggle_busy, session_id)
        self.fleet.schedule(random.uniform(120, 600), self.tap)

    def _elapsed(self) -> tuple[float, float]:
        assert self.session is not None
        now = time.time()
        busy = self.busy_total + (now - self.busy_since if self.busy_since else 0.0)
        return round(now - self.session[1], 3), round(busy, 3)

    def _heartbeat(self, session_id: str) -> None:
        if self.session is None or self.session[0] != session_id:
            return
        elapsed, busy = self._elapsed()
        self.emit(EventKind.SESSION_HEARTBEAT, session_id=session_id,
                  elapsed_seconds=elapsed, busy_seconds=busy)  # fmt: skip
        self.fleet.schedule(HEARTBEAT_S, self._heartbeat, session_id)

    def _toggle_busy(self, session_id: str) -> None:
        if self.session is None or self.session[0] != session_id:
            return
        if self.busy_since is None:
            self.busy_since = time.time()
            self.emit(EventKind.BUSY_STARTED, session_id=session_id)
        else:
            self.busy_total += time.time() - self.busy_since
            self.busy_since = None
            self.emit(EventKind.BUSY_ENDED, session_id=session_id)
        self.fleet.schedule(random.uniform(5, 40), self._toggle_busy, session_id)

    def _end_session(self) -> None:
        assert self.session is not None
        if self.busy_since is not None:
            self._toggle_busy(self.session[0])
        elapsed, busy = self._elapsed()
        self.emit(
            EventKind.SESSION_ENDED, session_id=self.session[0], reason=EndReason.BADGE.value,
            elapsed_seconds=elapsed, busy_seconds=busy,
        )  # fmt: skip
        self.session = None

    def resend_stale(self, now: float) -> None:
        """The outbox's rule: the oldest unacked events again, backing off while stuck."""
        if not self.pending:
            self.oldest = None
            return
        oldest = min(self.pending)
        if self.oldest is None or self.oldest[0] != oldest:
            self.oldest, self.resend_after_s = (oldest, now), RESEND_AFTER_S
            return
        if now - self.oldest[1] <= self.resend_after_s:
            return
        self.oldest = (oldest, now)
        self.resend_after_s = min(self.resend_after_s * 2, RESEND_MAX_S)
        topic = events_topic(self.spec.site, self.spec.machine)
        for seq in sorted(self.pending)[:RESEND_WINDOW]:
            self.fleet.measures.counts["resent"] += 1
            self.resends[seq] += 1
            self.client.publish(topic, self.pending[seq][1], qos=1)


class Fleet:
    """The controllers of one worker process and the loop that drives them."""

    def __init__(
        self, specs: list[ControllerSpec], host: str, port: int, control: Connection
    ) -> None:
        self.host, self.port = host, port
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, None)
        self.measures = Measures()
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.watched_uid: str | None = None
        self._timers: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.controllers = [SimController(spec, self) for spec in specs]
        self._running = True

    # -- paho's socket callbacks --------------------------------------------------------

    def socket_opened(self, client: mqtt.Client, ctrl: SimController, sock: Any) -> None:
        self.selector.register(sock, selectors.EVENT_READ, ctrl)

    def socket_closed(self, client: mqtt.Client, ctrl: SimController, sock: Any) -> None:
        self.measures.counts["disconnects"] += 1
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        if self._running:
            self.schedule(random.uniform(1, 3), self._reconnect, ctrl)

    def want_write(self, client: mqtt.Client, ctrl: SimController, sock: Any) -> None:
        self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ctrl)

    def wrote(self, client: mqtt.Client, ctrl: SimController, sock: Any) -> None:
        self.selector.modify(sock, selectors.EVENT_READ, ctrl)

    def _reconnect(self, ctrl: SimController) -> None:
        try:
            ctrl.client.reconnect()
        except OSError:
            self.schedule(random.uniform(1, 3), self._reconnect, ctrl)

    # -- timers and measures ------------------------------------------------------------

    def schedule(self, delay: float, action: Any, *args: Any) -> None:
        heapq.heappush(self._timers, (time.time() + delay, next(self._order), action, args))

    def acked(self, sent: float, now: float, resends: int = 0) -> None:
        self.measures.counts["acked"] += 1
        if self.window[0] <= sent <= self.window[1]:
            self.measures.ack_latencies.append(now - sent)
            if now - sent > 1.0:
                self.measures.slow.append((sent, now - sent, resends))

    def status(self) -> dict[str, int]:
        return {
            "controllers": len(self.controllers),
            "connected": sum(c.client.is_connected() for c in self.controllers),
            "configured": sum(c.snapshot is not None for c in self.controllers),
            "reached": len(self.measures.reached),
            "pending": sum(len(c.pending) for c in self.controllers),
        }

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        for ctrl in self.controllers:
            ctrl.client.connect(self.host, self.port, keepalive=60)
        next_misc = time.time() + 1
        while self._running:
            wait = min(0.05, max(0.0, self._timers[0][0] - time.time())) if self._timers else 0.05
            for key, mask in self.selector.select(wait):
                if key.data is None:
                    self._on_control()
                    continue
                ctrl = key.data
                if mask & selectors.EVENT_READ:
                    ctrl.client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    ctrl.client.loop_write()
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                _due, _n, action, args = heapq.heappop(self._timers)
                action(*args)
            if now >= next_misc:
                for ctrl in self.controllers:
                    ctrl.client.loop_misc()
                    ctrl.resend_stale(now)
                next_misc = now + 1

    def _on_control(self) -> None:
        command, *args = self.control.recv()
        if command == "status":
            self.control.send(self.status())
        elif command == "window":
            self.window = (args[0], args[1])
        elif command == "watch":
            self.watched_uid = args[0]
        elif command == "report":
            self.control.send((self.measures, self.status()))
        elif command == "stop":
            self._running = False
            for ctrl in self.controllers:
                ctrl.client.disconnect()
                ctrl.client.loop_write()
            self.control.send("stopped")


def run_worker(specs: list[ControllerSpec], host: str, port: int, control: Connection) -> None:
    """The entry point of one worker process."""
    random.seed()
    Fleet(specs, host, port, control).run()
