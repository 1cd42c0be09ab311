"""The controller process: one main loop between the reader, the state machine, the
outbox, the hardware and the MQTT link.

Only the main loop thread touches the state machine, the relay and the outbox writes;
the reader, the oops button and the link hand their inputs over through thread-safe
queues, so the loop never blocks on any of them (an online badge check is a message
out and, later, one in: taps, busy changes and time keep being served meanwhile).

Safety: the relay is off when the app is built, when the loop ends for any reason
(stop, SIGTERM via request_stop, an exception), and a session that a crash or power
cut left open is closed at its last heartbeat without switching the relay back on.

Durability: the events and local state of one input are committed in one outbox
transaction before the relay moves; a command's id is stored in that same
transaction, so a crash leaves a command either fully applied or not seen at all.

Publishing: new events go out as they are recorded; unacknowledged ones are sent
again after a reconnect (all of them) and, while the ack does not move, the oldest
RESEND_WINDOW of them after RESEND_AFTER_S, then after twice as long each time up to
RESEND_MAX_S; the wait goes back to RESEND_AFTER_S when the ack moves or the link
comes back. An ack that shows the server holds this stream's seqs under other events
(a conflict, or an ack beyond the last seq issued) moves the unacked events to a new
outbox stream instead of deleting anything.

Faults (firmware_pi.faults) are recorded as `fault` events once per occurrence:
a reader that keeps failing or raises, the outbox reaching its bound, a corrupt
outbox or snapshot file found at start, a loop stall past half the systemd
watchdog period, a new outbox stream.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from firmware_pi.clock import Clock, Instant
from firmware_pi.config import ControllerConfig
from firmware_pi.controller import (
    Controller,
    Effect,
    EmitEvent,
    ProtectBadge,
    SendAuthRequest,
    SetOutOfService,
    SetRelay,
    ShowSignal,
    WriteBadgeCounter,
)
from firmware_pi.faults import FaultCode, fault_data
from firmware_pi.hardware import MachineHardware
from firmware_pi.link import Incoming, Link, LinkDown, LinkUp
from firmware_pi.logs import bind_controller
from firmware_pi.outbox import LocalService, Outbox, OutboxFullError
from firmware_pi.reader import CardReader
from firmware_pi.signals import Signal
from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from firmware_pi.watchdog import SystemdNotifier
from protocol import (
    Ack,
    EndReason,
    Event,
    EventKind,
    ProtocolError,
    ReplayError,
    SignatureError,
    TopicKind,
    verify_auth_response,
    verify_command,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # the longest the loop waits for a tap before serving the rest
RESEND_AFTER_S = 10.0  # first resend when the oldest pending event is unacked this long
RESEND_MAX_S = 320.0  # the wait between resends doubles up to this while nothing moves
RESEND_WINDOW = 100  # a resend sends the oldest this many unacked events, no more
PUBLISH_BATCH = 100
NEAR_MISS_RATIO = 0.5  # a loop gap past this share of the watchdog period is a fault
NEAR_MISS_REPORT_EVERY_S = 600.0  # at most one watchdog_near_miss fault this often

ReaderT = TypeVar("ReaderT", bound=CardReader)


class BusyInput(Protocol):
    """Anything that says whether the tool is working (hardware.BusySensor is one)."""

    @property
    def is_busy(self) -> bool: ...


class ManualBusy:
    """A busy input set by hand (`fablab-pi simulate`, tests)."""

    def __init__(self) -> None:
        self.is_busy = False


class _SeenCommands:
    """The outbox's applied command ids, as the container verify_command asks."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def __contains__(self, command_id: object) -> bool:
        return isinstance(command_id, str) and self._outbox.command_seen(command_id)


class ControllerApp(Generic[ReaderT]):
    """Runs one controller: start()/stop() on a thread, or run_forever() in the caller's.

    The app owns the parts it is given and closes them when it stops; it runs once.
    Generic in its reader so that `app.reader` keeps its type (a SimulatedReader's
    `tap()` type-checks).
    """

    def __init__(
        self,
        *,
        config: ControllerConfig,
        controller: Controller,
        hardware: MachineHardware,
        reader: ReaderT,
        outbox: Outbox,
        link: Link,
        snapshot_store: SnapshotStore,
        verifier: SnapshotVerifier,
        clock: Clock,
        boot_id: str,
        busy_input: BusyInput | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.controller = controller
        self.hardware = hardware
        self.reader = reader
        self.outbox = outbox
        self.link = link
        self.snapshot_store = snapshot_store
        self.verifier = verifier
        self.clock = clock
        self.boot_id = boot_id
        self.hardware.relay.off()  # safe by default, whatever the parts were doing
        self.busy_input: BusyInput | None = busy_input if busy_input is not None else (
            hardware.busy
        )
        self.notifier = notifier if notifier is not None else SystemdNotifier(environ={})
        self._oops_requests = 0
        self._oops_lock = threading.Lock()
        self._was_connected = False
        self._full_logged_at = float("-inf")
        self._stepping = False
        # How long each iteration waits for a tap; 0 when stepped by tests or benchmarks.
        self.read_timeout_s = READ_TIMEOUT_S
        self._shut_down = False

        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._ran = False
        self.failure: BaseException | None = None
        # Completed main loop iterations: proof of life for tests and (later) a watchdog.
        self.iterations = 0
        # Publishing position within the current connection: events up to this seq have
        # been handed to the broker since the last (re)connect or resend.
        self._sent_up_to = 0
        # Resend: the oldest pending seq, since when it waits, and the current backoff.
        self._oldest_pending: int | None = None
        self._oldest_pending_since = 0.0
        self._resend_after_s = RESEND_AFTER_S
        self._outbox_changed = True
        self._status_announced_at: float | None = None
        # Faults already reported and not yet cleared (reported once per occurrence).
        self._reader_failing = False
        self._full_reported = False
        self._last_step_mono: float | None = None
        self._near_miss_reported_at = float("-inf")
        self._near_misses = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the link to the broker is up."""
        return self.link.connected

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run the main loop on a background thread."""
        self._claim_run()
        self._thread = threading.Thread(
            target=self._run_logged, name=f"controller-{self.config.controller_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End any session (reason `shutdown`), switch the relay off and close everything."""
        self._stop_requested.set()
        if not self._ran or self._stepping:
            # Never started, or stepped by the caller: there is no loop to do the closing.
            self._ran = True
            if not self._shut_down:
                self._shutdown()
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("main loop did not stop within %.1f s; switching the relay off", timeout)
                self.hardware.relay.off()

    def begin(self) -> None:
        """Start without a loop thread: the caller then calls step() (tests, benchmarks)."""
        self._claim_run()
        self._stepping = True
        self._start_up()

    def step(self) -> None:
        """One main-loop iteration in the caller's thread, after begin()."""
        if not self._stepping:
            raise RuntimeError("step() needs begin()")
        self._step()

    def report_oops(self) -> None:
        """Press the oops button from code (simulate, tests); safe from any thread."""
        with self._oops_lock:
            self._oops_requests += 1

    def request_stop(self) -> None:
        """Ask the loop to stop soon (safe from a signal handler)."""
        self._stop_requested.set()

    def run_forever(self) -> None:
        """Run the main loop in this thread until request_stop(); re-raises a loop failure."""
        self._claim_run()
        self._run()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _claim_run(self) -> None:
        if self._ran:
            raise RuntimeError("a ControllerApp runs once; build a new one")
        self._ran = True

    def _run_logged(self) -> None:
        try:
            self._run()
        except BaseException:
            # Already logged and the relay is off; the thread just ends.
            return

    def _run(self) -> None:
        bind_controller(self.config.controller_id)  # its log lines say whose they are
        try:
            self._start_up()
            while not self._stop_requested.is_set():
                self._step()
        except BaseException as exc:
            self.failure = exc
            log.critical("controller main loop failed; relay off", exc_info=True)
            raise
        finally:
            self._shutdown()

    # -- main loop ----------------------------------------------------------------------

    def _start_up(self) -> None:
        self._recover()
        self._report_corrupt_files()
        self.link.start()
        self.hardware.leds.offline = not self.connected
        self._was_connected = self.connected
        now = self.clock.now()
        self._apply([ShowSignal(self.controller.resting_signal())], now)
        self.notifier.ready(f"controller {self.config.controller_id} running")

    def _recover(self) -> None:
        """Close a session the previous run left open (crash, power cut); relay stays off."""
        self.hardware.relay.off()
        interrupted = self.outbox.open_session()
        if interrupted is None:
            return
        now = self.clock.now()
        self._apply(
            self.controller.close_interrupted(
                session_id=interrupted.session_id,
                last_wall=interrupted.last_wall,
                elapsed_seconds=interrupted.elapsed_seconds,
                busy_seconds=interrupted.busy_seconds,
            ),
            now,
        )

    def _report_corrupt_files(self) -> None:
        """Faults for an outbox or snapshot file found corrupt and moved aside at start."""
        quarantined = self.outbox.quarantined
        if quarantined is not None:
            self._record_fault(
                FaultCode.OUTBOX_CORRUPT,
                f"outbox file was corrupt ({quarantined.reason}): moved to "
                f"{quarantined.path.name}; a fresh outbox started, relay off",
            )
        rejected = self.snapshot_store.rejected
        if rejected is not None:
            self._record_fault(
                FaultCode.SNAPSHOT_CORRUPT,
                f"stored snapshot {self.snapshot_store.path.name} unusable ({rejected.reason}):"
                f" moved to {rejected.path.name}; deciding without a snapshot until the"
                " server's config arrives",
            )

    def _record_fault(self, code: FaultCode, message: str, now: Instant | None = None) -> None:
        """Commit a `fault` event (always recorded, even at the outbox bound)."""
        log.error("fault %s: %s", code.value, message)
        now = now or self.clock.now()
        self.outbox.append(
            EventKind.FAULT,
            fault_data(code, message),
            wall_time=now.wall,
            mono_time=now.mono,
            boot_id=self.boot_id,
            controller_id=self.config.controller_id,
        )
        self._outbox_changed = True

    def _announce_status(self, now: Instant) -> None:
        """Say `online` again every heartbeat interval, sessions or not: the server counts
        a controller silent for three intervals as offline."""
        snapshot = self.controller.snapshot
        interval = snapshot.settings.heartbeat_interval_s if snapshot else 60
        due = self._status_announced_at is None or (
            now.mono - self._status_announced_at >= interval
        )
        if due and self.connected and self.link.publish_status():
            self._status_announced_at = now.mono

    def _step(self) -> None:
        try:
            uid = self.reader.read(self.read_timeout_s)
        except Exception as exc:
            self._record_fault(FaultCode.READER_FAILURE,
                               f"reading the badge reader failed: {type(exc).__name__}: {exc}")
            raise
        if uid is not None:
            now = self.clock.now()
            try:
                effects = self.controller.tap(
                    uid, now, online=self.connected, sector=self.reader.sector(uid)
                )
            except ProtocolError as exc:
                log.warning("ignoring unreadable badge %r: %s", uid, exc)
            else:
                self._apply(effects, now)
        now = self.clock.now()
        if self.controller.session is not None and self.reader.senses_presence:
            self.controller.card_present(self.reader.present(), now)
        if self.busy_input is not None:
            busy = bool(self.busy_input.is_busy)
            if busy != self.controller.busy:
                self._apply(self.controller.set_busy(busy, now), now)
        presses = self._take_oops()
        if presses:
            self._apply(self.controller.oops(now), now)
        for link_event in self.link.drain():
            self._on_link_event(link_event)
        now = self.clock.now()
        self._apply(self.controller.tick(now), now)
        connected = self.connected
        self.hardware.leds.offline = not connected
        if self._was_connected and not connected and self.hardware.buzzer is not None:
            self.hardware.buzzer.play(Signal.OFFLINE)
        self._was_connected = connected
        self._check_reader(now)
        self._check_stall(now)
        self._publish_pending(now)
        self._announce_status(now)
        self.notifier.ping(now.mono)
        self.iterations += 1

    def _check_reader(self, now: Instant) -> None:
        failure = self.reader.failure()
        if failure is not None and not self._reader_failing:
            self._record_fault(FaultCode.READER_FAILURE, failure, now)
        elif failure is None and self._reader_failing:
            log.info("the badge reader works again")
        self._reader_failing = failure is not None

    def _check_stall(self, now: Instant) -> None:
        """A loop iteration that came late enough to nearly trip the systemd watchdog."""
        last, self._last_step_mono = self._last_step_mono, now.mono
        watchdog_s = self.notifier.watchdog_s
        if last is None or not watchdog_s:
            return
        gap = now.mono - last
        if gap < NEAR_MISS_RATIO * watchdog_s:
            return
        self._near_misses += 1
        if now.mono - self._near_miss_reported_at < NEAR_MISS_REPORT_EVERY_S:
            return
        self._near_miss_reported_at = now.mono
        self._record_fault(
            FaultCode.WATCHDOG_NEAR_MISS,
            f"main loop stalled {gap:.1f} s of a {watchdog_s:.0f} s watchdog"
            f" ({self._near_misses} such stalls since start)",
            now,
        )

    def _take_oops(self) -> int:
        with self._oops_lock:
            presses, self._oops_requests = self._oops_requests, 0
        if self.hardware.oops is not None:
            presses += self.hardware.oops.take_presses()
        return presses

    def _apply(self, effects: Sequence[Effect], now: Instant) -> None:
        """Events and local state to the outbox in one transaction first (durability),
        then the relay, then the signals."""
        if any(isinstance(e, EmitEvent | SetOutOfService) for e in effects):
            with self.outbox.atomic():
                self._record(effects, now)
        self._act(effects)
        self._write_badge(effects)

    def _write_badge(self, effects: Sequence[Effect]) -> None:
        """Card writes the decision waits for (anti-cloning sector): done here, on the
        loop thread, and their outcome fed back to the state machine at once."""
        for effect in effects:
            if isinstance(effect, WriteBadgeCounter):
                ok = self._card_io(self.reader.write_counter, effect.uid, effect.counter)
                now = self.clock.now()
                self._apply(self.controller.badge_written(ok, now), now)
            elif isinstance(effect, ProtectBadge):
                ok = self._card_io(self.reader.protect, effect.uid)
                now = self.clock.now()
                self._apply(self.controller.badge_protected(ok), now)

    @staticmethod
    def _card_io(write: Callable[..., bool], *args: object) -> bool:
        try:
            return write(*args)
        except Exception:
            log.exception("writing to the badge failed")
            return False

    def _record(self, effects: Sequence[Effect], now: Instant) -> None:
        """The outbox part of `effects`; the caller holds the transaction."""
        for effect in effects:
            if isinstance(effect, EmitEvent):
                try:
                    self.outbox.append(
                        effect.kind,
                        effect.data,
                        wall_time=now.wall,
                        mono_time=now.mono,
                        boot_id=self.boot_id,
                        controller_id=self.config.controller_id,
                    )
                except OutboxFullError as exc:
                    self._outbox_full(exc, now)
                else:
                    self._outbox_changed = True
            elif isinstance(effect, SetOutOfService):
                self.outbox.set_local_service(LocalService(effect.out_of_service, effect.reason))

    def _outbox_full(self, exc: OutboxFullError, now: Instant) -> None:
        # Never silent: every refusal is counted, logged at most every 10 s, and the
        # first of each full spell is reported to the server as a fault.
        if now.mono - self._full_logged_at >= 10.0:
            self._full_logged_at = now.mono
            log.error("%s (%d refused so far)", exc, self.outbox.refused)
        if not self._full_reported:
            self._full_reported = True
            self._record_fault(
                FaultCode.OUTBOX_FULL,
                f"outbox reached its bound of {self.outbox.max_events} unacknowledged events:"
                " busy changes, denials and heartbeats are not recorded until the server"
                " acknowledges",
                now,
            )

    def _act(self, effects: Sequence[Effect]) -> None:
        """The relay, then signals and online checks: after the outbox has committed."""
        for effect in effects:
            if isinstance(effect, SetRelay):
                if effect.on:
                    self.hardware.relay.on()
                else:
                    self.hardware.relay.off()
        for effect in effects:
            if isinstance(effect, ShowSignal):
                self.hardware.show(effect.signal)
            elif isinstance(effect, SendAuthRequest) and not self.link.publish_auth_request(
                effect.request
            ):
                log.warning("could not send the online check of badge %s: it will time out",
                            effect.request.badge_uid)

    def _on_link_event(self, link_event: LinkUp | LinkDown | Incoming) -> None:
        if isinstance(link_event, LinkUp):
            # A new connection knows nothing of what the last one carried: resend all.
            self._sent_up_to = 0
            self._oldest_pending_since = self.clock.now().mono
            self._resend_after_s = RESEND_AFTER_S
        elif isinstance(link_event, LinkDown):
            log.info("link down (%s): deciding from snapshot, events wait in the outbox",
                     link_event.reason)
        elif link_event.kind is TopicKind.CONFIG:
            self._on_config(link_event.payload)
        elif link_event.kind is TopicKind.ACK:
            self._on_ack(link_event.payload)
        elif link_event.kind is TopicKind.COMMAND:
            self._on_command(link_event.payload)
        elif link_event.kind is TopicKind.AUTH_RESPONSE:
            self._on_auth_response(link_event.payload)

    def _on_command(self, payload: bytes) -> None:
        now = self.clock.now()
        try:
            command = verify_command(
                payload, self.config.key, now=now.wall, seen=_SeenCommands(self.outbox)
            )
        except ReplayError as exc:
            log.info("command ignored: %s", exc)
            return
        except ProtocolError as exc:
            log.error("command rejected: %s", exc)
            return
        cfg = self.config
        if (command.controller_id, command.site, command.machine) != (
            cfg.controller_id, cfg.site, cfg.machine
        ):
            log.error("command %s is addressed to %s (%s/%s): ignored", command.command_id,
                      command.controller_id, command.site, command.machine)
            return
        effects = self.controller.command(command, now)
        # The id, the state it leaves and command_applied: all on disk, or none of them.
        with self.outbox.atomic():
            self.outbox.remember_command(command.command_id, command.expires_at, now=now.wall)
            self._record(effects, now)
        self._act(effects)

    def _on_auth_response(self, payload: bytes) -> None:
        try:
            response = verify_auth_response(payload, self.config.key)
        except ProtocolError as exc:
            log.error("auth response rejected: %s", exc)
            return
        if response.controller_id != self.config.controller_id:
            log.error("auth response for controller %s ignored", response.controller_id)
            return
        now = self.clock.now()
        self._apply(self.controller.auth_response(response, now), now)

    def _on_config(self, payload: bytes) -> None:
        try:
            snapshot = self.verifier.verify(payload)
        except SignatureError as exc:
            log.error("config rejected, bad signature: %s", exc)
            return
        except ProtocolError as exc:
            log.error("config rejected: %s", exc)
            return
        held = self.controller.snapshot
        if held is not None and snapshot.version <= held.version:
            # The retained config comes back on every reconnect: the same version is normal,
            # an older one is not (a replay, or a server that lost its counter).
            level = logging.DEBUG if snapshot.version == held.version else logging.WARNING
            log.log(level, "config version %d ignored: holding version %d",
                    snapshot.version, held.version)
            return
        try:
            self.snapshot_store.save(payload)
        except OSError:
            log.exception("could not store snapshot version %d; using it anyway", snapshot.version)
        log.info("snapshot version %d: %d permissions", snapshot.version,
                 len(snapshot.permissions))
        now = self.clock.now()
        self._apply(self.controller.set_snapshot(snapshot, now), now)

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except ProtocolError as exc:
            log.error("ack rejected: %s", exc)
            return
        if ack.controller_id != self.config.controller_id:
            log.warning("ignoring ack for controller %s", ack.controller_id)
            return
        if ack.outbox_id != self.outbox.outbox_id:
            # Another stream of this controller (one it left): nothing here to drop or report.
            log.debug("ignoring ack for outbox %s", ack.outbox_id)
            return
        if ack.conflicts or ack.up_to_seq > self.outbox.last_seq:
            self._new_stream(ack)
            return
        if ack.rejected:
            # Kept by the server as rejected; the cumulative ack below drops them here.
            log.error("server rejected events with seq %s", ", ".join(map(str, ack.rejected)))
        removed = self.outbox.ack(ack.up_to_seq, outbox_id=ack.outbox_id)
        if removed:
            self._outbox_changed = True
            log.debug("ack up to seq %d removed %d events", ack.up_to_seq, removed)

    def _new_stream(self, ack: Ack) -> None:
        """The server holds seqs of this stream under other events: move what is unacked
        to a new stream (same event ids, seqs from 1); nothing is deleted."""
        why = (f"conflicting seqs {', '.join(map(str, ack.conflicts))}" if ack.conflicts
               else f"ack up to seq {ack.up_to_seq} beyond the last seq issued,"
               f" {self.outbox.last_seq}")
        now = self.clock.now()
        with self.outbox.atomic():
            previous = self.outbox.restream()
            self._record_fault(
                FaultCode.OUTBOX_STREAM_RESTARTED,
                f"server holds seqs of outbox stream {previous} under other events ({why}):"
                f" {self.outbox.last_seq} unacknowledged events moved to stream"
                f" {self.outbox.outbox_id}",
                now,
            )
        self._sent_up_to = 0
        self._oldest_pending = None
        self._resend_after_s = RESEND_AFTER_S
        self._outbox_changed = True

    def _publish_pending(self, now: Instant) -> None:
        if self._outbox_changed:
            self._outbox_changed = False
            if len(self.outbox) < self.outbox.warn_at:
                self._full_reported = False
            oldest = self.outbox.pending(limit=1)
            oldest_seq = oldest[0].seq if oldest else None
            if oldest_seq != self._oldest_pending:
                # Progress (or a new stream): the ack moved, so the backoff starts over.
                self._oldest_pending = oldest_seq
                self._oldest_pending_since = now.mono
                self._resend_after_s = RESEND_AFTER_S
        if self._oldest_pending is None or not self.connected:
            return
        if now.mono - self._oldest_pending_since > self._resend_after_s:
            self._resend_oldest(now)
        if self._sent_up_to >= self.outbox.last_seq:
            return
        self._publish(self.outbox.pending(limit=PUBLISH_BATCH, after_seq=self._sent_up_to))

    def _resend_oldest(self, now: Instant) -> None:
        """Send the oldest unacked events again (those sent before), then back off."""
        log.warning("seq %d unacked for %.0f s: resending up to %d events, next in %.0f s",
                    self._oldest_pending, now.mono - self._oldest_pending_since,
                    RESEND_WINDOW, min(self._resend_after_s * 2, RESEND_MAX_S))
        self._oldest_pending_since = now.mono
        self._resend_after_s = min(self._resend_after_s * 2, RESEND_MAX_S)
        window = [e for e in self.outbox.pending(limit=RESEND_WINDOW)
                  if e.seq <= self._sent_up_to]
        self._publish(window, resend=True)

    def _publish(self, events: Sequence[Event], *, resend: bool = False) -> None:
        """Hand `events` to the link in order, marked published first (never rewritten)."""
        if not events:
            return
        self.outbox.mark_published(events[-1].seq)
        for event in events:
            if not self.link.publish_event(event):
                return
            if not resend:
                self._sent_up_to = event.seq

    # -- shutdown -----------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._shut_down = True
        self.notifier.stopping()
        try:
            now = self.clock.now()
            self._apply(self.controller.stop(EndReason.SHUTDOWN, now), now)
        except Exception:
            log.exception("could not record the end of the session at shutdown")
        finally:
            self.hardware.relay.off()
        try:
            self._publish_pending(self.clock.now())
        except Exception:
            log.exception("could not publish pending events at shutdown")
        for name, close in (
            ("link", self.link.stop),
            ("reader", self.reader.close),
            ("outbox", self.outbox.close),
            ("hardware", self.hardware.close),
            ("notifier", self.notifier.close),
        ):
            try:
                close()
            except Exception:
                log.exception("error closing the %s", name)
        log.info("controller stopped")
