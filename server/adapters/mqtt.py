"""The server's MQTT link (paho-mqtt 2.x) and the ingest worker behind it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from protocol import (
    DEFAULT_AUTH_TIMEOUT_S,
    BrokerAddress,
    ProtocolError,
    TopicKind,
    parse_topic,
    set_tcp_nodelay,
    shared_filter,
    subscription_filter,
)
from server.adapters import metrics
from server.adapters.metrics import AUTH_CHECK_SECONDS
from server.adapters.orm import utcnow
from server.domain.ingest_rules import Plausibility
from server.service_layer.commands import (
    AnswerAuthRequest,
    IngestBatch,
    IngestEvent,
    OutgoingMessage,
    PublishConfigs,
    RecordControllerStatus,
    RecordControllerStatuses,
)
from server.service_layer.ingest import IngestOutcome
from server.service_layer.messagebus import MessageBus

logger = logging.getLogger(__name__)


class ServerMqttLink:
    """One paho client: keeps reconnecting, resubscribes, hands messages to a callback."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: Callable[[str, bytes], None],
        on_connect: Callable[[], None] | None = None,
        username: str | None = None,
        password: str | None = None,
        retained_timeout_s: float = 5.0,
        clean_session: bool = False,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.retained_timeout_s = retained_timeout_s
        self.clean_session = clean_session
        self._subscriptions = list(subscriptions)
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self._connected = threading.Event()
        self._stopping = False  # stop() disconnects on purpose: not a warning
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            # False: the broker queues QoS 1 events while the server is down. True for
            # a member of a shared group: Mosquitto keeps handing a disconnected
            # persistent member its share, held until that process comes back.
            clean_session=clean_session,
        )
        if username:
            self._client.username_pw_set(username, password)
        if self.address.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_socket_open = set_tcp_nodelay  # answers must not wait for Nagle
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    def start(self, *, wait: float | None = None) -> None:
        """Connect in the background; with `wait`, block up to that many seconds for it."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=30)
        self._client.loop_start()
        if wait is not None and not self._connected.wait(wait):
            logger.warning("broker %s not reachable yet; retrying", self.address)

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def publish(self, message: OutgoingMessage) -> None:
        """Send a message. A retained one (a config) is sent only while connected (every
        config is republished on connect) and this returns once the broker confirmed it
        or `retained_timeout_s` passed: configs sent in turn, even by several server
        processes, reach the broker in turn."""
        self.publish_many([message])

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """`publish` for several messages: all handed to the client at once, then the
        broker's confirmations of the retained ones awaited (`retained_timeout_s` in all)."""
        waiting = [(m, info) for m in messages if (info := self._send(m)) is not None]
        deadline = time.monotonic() + self.retained_timeout_s
        for message, info in waiting:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                logger.warning("config to %s not confirmed: %s", message.topic, exc)
                continue
            if not info.is_published():
                logger.warning("config to %s not confirmed within %ss", message.topic,
                               self.retained_timeout_s)  # fmt: skip

    def _send(self, message: OutgoingMessage) -> mqtt.MQTTMessageInfo | None:
        """Hand one message to the client; its delivery info if it is a retained one."""
        if message.retain and not self._client.is_connected():
            logger.debug("not connected: %s is republished on connect", message.topic)
            return None
        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # Retained configs are all republished on (re)connect: only other losses matter
            # (an ack lost while the server stops is sent again after its restart).
            level = logging.DEBUG if message.retain else (
                logging.INFO if self._stopping else logging.WARNING
            )
            logger.log(level, "publish to %s not sent now (rc=%s)", message.topic, info.rc)
            return None
        return info if message.retain else None

    def _handle_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            logger.error("broker refused connection: %s", reason)
            return
        for topic_filter in self._subscriptions:
            client.subscribe(topic_filter, qos=1)
        self._connected.set()
        logger.info("connected to broker %s:%s", self.address.host, self.address.port)
        if self._on_connect_cb:
            self._on_connect_cb()

    def _handle_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self._connected.clear()
        level = logging.INFO if self._stopping else logging.WARNING
        logger.log(level, "disconnected from broker: %s", reason)

    def _handle_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self._on_message_cb(message.topic, bytes(message.payload))


def ingest_subscriptions(site: str = "+", shared_group: str | None = None) -> list[str]:
    """The filters ingest listens on (site "+": every site); a shared group spreads
    them over server processes, each message to one of them."""
    kinds = (TopicKind.EVENTS, TopicKind.STATUS, TopicKind.AUTH_REQUEST)
    filters = [subscription_filter(kind, site) for kind in kinds]
    if shared_group:
        return [shared_filter(shared_group, f) for f in filters]
    return filters


_REPUBLISH = object()
_STOP = object()


class IngestWorker:
    """Applies incoming messages on its own thread, in batches; never dies on bad input.

    Each turn takes every message waiting, up to `max_batch`: its event messages are
    ingested as one batch (one transaction, one ack per stream), then republish requests
    in arrival order. Status messages (liveness, re-announced by every controller each
    heartbeat interval) are recorded together, in their order, in one transaction at
    most every `status_interval_s` while events keep coming, at once when a turn has
    none, and before the worker stops. An idle worker takes a message as soon as it
    arrives: batches grow only under load.

    The queue is bounded: when it is full, `submit` blocks the caller (the MQTT client's
    network thread), which then stops reading from the broker; the broker keeps the
    QoS 1 messages for the server's persistent session. Nothing is dropped.
    """

    def __init__(
        self,
        bus: MessageBus,
        *,
        name: str = "ingest",
        max_queue: int = 1000,
        max_batch: int = 1000,
        limits: Plausibility | None = None,
        status_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.name = name
        self.limits = limits or Plausibility()
        self.max_batch = max_batch
        self.status_interval_s = status_interval_s
        self._clock = clock
        # Status messages waiting to be recorded, and since when the oldest waits.
        self._statuses: list[tuple[str, bytes, float]] = []
        self._statuses_since = 0.0
        self.stats: Counter[str] = Counter()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a message; blocks while the queue is full (back-pressure)."""
        self._queue.put((topic, payload, time.monotonic()))
        metrics.INGEST_QUEUE_DEPTH.set(self._queue.qsize())

    @property
    def queue_depth(self) -> int:
        """Messages waiting for ingest now."""
        return self._queue.qsize()

    def request_republish(self) -> None:
        """Republish every machine's config (after connecting: retained copies may be gone)."""
        self._queue.put(_REPUBLISH)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=10)
        except queue.Full:
            logger.warning("%s queue still full at stop", self.name)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            turn = self._take()
            metrics.INGEST_QUEUE_DEPTH.set(self._queue.qsize())
            if self._handle_turn(turn):
                return

    def _handle_turn(self, turn: list[object]) -> bool:
        """The events of a turn as one batch (in arrival order), the status messages
        waiting when due (in their order), then the rest (republish requests); True at
        the stop.

        Controllers re-announce their status every heartbeat interval: handled one by
        one between the events, a fleet's statuses would cut the batches down to an
        event or two; recorded at every turn, they took a transaction per turn (1,000
        controllers: 100 statuses a second, a turn every few tens of milliseconds)."""
        events: list[tuple[str, bytes, float]] = []
        statuses = self._statuses
        others: list[object] = []
        stop = False
        for item in turn:
            if item is _STOP:
                stop = True
                break
            if isinstance(item, tuple) and _is_event(item[0]):
                events.append(cast(tuple[str, bytes, float], item))
            elif isinstance(item, tuple) and _is_status(item[0]):
                if not statuses:
                    self._statuses_since = self._clock()
                statuses.append(cast(tuple[str, bytes, float], item))
            else:
                others.append(item)
        self._guarded(self._ingest, events)
        due = self._clock() - self._statuses_since >= self.status_interval_s
        if statuses and (stop or not events or due or len(statuses) >= self.max_batch):
            self._statuses = []
            self._guarded(self._record_statuses, statuses)
        for item in others:
            self._guarded(self._process, item)
        return stop

    def _record_statuses(self, statuses: list[tuple[str, bytes, float]]) -> None:
        if not statuses:
            return
        received_at = utcnow()
        applied: list[bool] = self.bus.handle(RecordControllerStatuses(tuple(
            RecordControllerStatus(topic, payload, received_at) for topic, payload, _ in statuses
        )))  # fmt: skip
        for ok in applied:
            self.stats["status_ok" if ok else "status_invalid"] += 1

    def _take(self) -> list[object]:
        """The next message, and every one waiting behind it up to `max_batch`; nothing
        once statuses have waited `status_interval_s` with no message coming."""
        try:
            if self._statuses:
                due = self._statuses_since + self.status_interval_s - self._clock()
                turn = [self._queue.get(timeout=max(due, 0.0))]
            else:
                turn = [self._queue.get()]
        except queue.Empty:
            return []
        while len(turn) < self.max_batch and turn[-1] is not _STOP:
            try:
                turn.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return turn

    def _guarded(self, step: Callable[[Any], None], arg: Any) -> None:
        try:
            step(arg)
        except Exception:
            # The database may be down: nothing was acked, the controllers resend.
            self.stats["errors"] += 1
            logger.exception("ingest failed; the messages will be resent by their controllers")

    def _ingest(self, events: list[tuple[str, bytes, float]]) -> None:
        """One batch of event messages: one transaction, then one ack per stream."""
        if not events:
            return
        received_at = utcnow()
        batch = IngestBatch(tuple(
            IngestEvent(topic, payload, received_at, limits=self.limits)
            for topic, payload, _ in events
        ))  # fmt: skip
        began = time.monotonic()
        outcomes: list[IngestOutcome] = self.bus.handle(batch)
        done = time.monotonic()
        self._record(events, outcomes, took=done - began, done=done)

    def _record(
        self,
        events: list[tuple[str, bytes, float]],
        outcomes: list[IngestOutcome],
        *,
        took: float,
        done: float,
    ) -> None:
        """Count a batch's outcomes (stats and Prometheus metrics)."""
        metrics.INGEST_BATCH_SIZE.observe(len(events))
        metrics.INGEST_COMMIT_SECONDS.observe(took)
        seen: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for (_, _, arrived), outcome in zip(events, outcomes, strict=True):
            seen[outcome.outcome.value] += 1
            if outcome.reason:
                reasons[outcome.reason] += 1
            if outcome.acked_seq is not None:
                metrics.INGEST_ACK_SECONDS.observe(done - arrived)
        for name, count in seen.items():
            self.stats[f"events_{name}"] += count
            metrics.INGEST_EVENTS.labels(name).inc(count)
        for reason, count in reasons.items():
            metrics.INGEST_REJECTED.labels(reason).inc(count)

    def _process(self, item: object) -> None:
        if item is _REPUBLISH:
            self.bus.handle(PublishConfigs())
            return
        topic, payload, _ = cast(tuple[str, bytes, float], item)
        try:
            kind = parse_topic(topic).kind
        except ProtocolError as exc:
            self.stats["bad_topic"] += 1
            logger.warning("ignored message on %r: %s", topic, exc)
            return
        # Events and status messages never reach here: a turn batches them (_handle_turn).
        if kind is TopicKind.AUTH_REQUEST:
            answered = self.bus.handle(AnswerAuthRequest(topic, payload))
            self.stats["auth_answered" if answered else "auth_invalid"] += 1


def _is_event(topic: str) -> bool:
    return topic.endswith("/" + TopicKind.EVENTS.value)


def _is_status(topic: str) -> bool:
    return topic.endswith("/" + TopicKind.STATUS.value)


_NOTHING = object()


class FairAuthQueue:
    """Online checks waiting for an answer, one queue per controller, served in turn.

    `put` never blocks: past `per_controller` waiting requests of one controller, its
    oldest is dropped (`auth_overflow`). `get` skips requests older than `timeout_s`
    (`auth_expired`): the controller has stopped waiting and decided from its snapshot.
    So one controller flooding `auth/request` delays another's check by at most one
    request per flooding controller.
    """

    def __init__(
        self,
        *,
        per_controller: int = 20,
        timeout_s: float = DEFAULT_AUTH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        stats: Counter[str] | None = None,
    ) -> None:
        self.per_controller = per_controller
        self.timeout_s = timeout_s
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._clock = clock
        self._queues: dict[str, deque[tuple[float, object]]] = {}
        self._turns: deque[str] = deque()  # controllers with waiting requests, in order
        self._cond = threading.Condition()
        self._closed = False

    def put(self, key: str, item: object) -> None:
        with self._cond:
            waiting = self._queues.get(key)
            if waiting is None:
                waiting = self._queues[key] = deque()
                self._turns.append(key)
            if len(waiting) >= self.per_controller:
                waiting.popleft()
                self.stats["auth_overflow"] += 1
            waiting.append((self._clock() + self.timeout_s, item))
            self._cond.notify()

    def pending(self, key: str) -> int:
        with self._cond:
            return len(self._queues.get(key, ()))

    def get(self, timeout: float | None = None) -> object | None:
        """The next fresh request, controllers in turn; None on timeout or once closed."""
        with self._cond:
            item = self._next_fresh()
            if item is _NOTHING and not self._closed and timeout != 0:
                self._cond.wait(timeout)
                item = self._next_fresh()
            return None if item is _NOTHING else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def _next_fresh(self) -> object:
        while self._turns:
            key = self._turns.popleft()
            waiting = self._queues[key]
            deadline, item = waiting.popleft()
            if waiting:
                self._turns.append(key)  # its next request waits for everyone's turn
            else:
                del self._queues[key]
            if self._clock() > deadline:
                self.stats["auth_expired"] += 1
                continue
            return item
        return _NOTHING


class AuthWorker:
    """Answers online checks on its own thread, fairly between controllers."""

    def __init__(
        self,
        bus: MessageBus,
        *,
        per_controller: int = 20,
        timeout_s: float = DEFAULT_AUTH_TIMEOUT_S,
        name: str = "auth",
    ) -> None:
        self.bus = bus
        self.name = name
        self.stats: Counter[str] = Counter()
        self._queue = FairAuthQueue(
            per_controller=per_controller, timeout_s=timeout_s, stats=self.stats
        )
        self._thread: threading.Thread | None = None

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a request under its machine (the ACL binds a controller to it); never blocks."""
        try:
            key = parse_topic(topic).machine
        except ProtocolError:
            key = ""
        self._queue.put(key, (topic, payload, utcnow(), time.perf_counter()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.close()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                if self._queue.closed:
                    return
                continue
            topic, payload, received_at, arrived = cast(tuple[str, bytes, datetime, float], item)
            try:
                answered = self.bus.handle(AnswerAuthRequest(topic, payload, received_at))
                self.stats["auth_answered" if answered else "auth_invalid"] += 1
                if answered:  # arrival to answer sent (and a stale snapshot republished)
                    AUTH_CHECK_SECONDS.observe(time.perf_counter() - arrived)
            except Exception:
                self.stats["errors"] += 1
                logger.exception("online check failed; the controller decides from its snapshot")


def dispatch_by_kind(ingest: IngestWorker, auth: AuthWorker) -> Callable[[str, bytes], None]:
    """Route online checks to their own worker: a tap must not wait behind a backlog."""

    def on_message(topic: str, payload: bytes) -> None:
        target = auth if topic.endswith("/" + TopicKind.AUTH_REQUEST.value) else ingest
        target.submit(topic, payload)

    return on_message
