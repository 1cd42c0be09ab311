"""The controller process: one main loop between the reader, the state machine, the
outbox, the hardware and the MQTT link.

Only the main loop thread touches the state machine, the relay and the outbox writes;
the reader, the oops button and the link hand their inputs over through thread-safe
queues, so the loop never blocks on any of them (an online badge check is a message
out and, later, one in: taps, busy changes and time keep being served meanwhile).

Safety: the relay is off when the app is built, when the loop ends for any reason
(stop, SIGTERM via request_stop, an exception), and a session that a crash or power
cut left open is closed at its last heartbeat without switching the relay back on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from firmware_pi.clock import Clock, Instant
from firmware_pi.config import ControllerConfig
from firmware_pi.controller import (
    Controller,
    Effect,
    EmitEvent,
    SendAuthRequest,
    SetOutOfService,
    SetRelay,
    ShowSignal,
)
from firmware_pi.hardware import MachineHardware
from firmware_pi.link import Incoming, Link, LinkDown, LinkUp
from firmware_pi.outbox import LocalService, Outbox, OutboxFullError
from firmware_pi.reader import CardReader
from firmware_pi.signals import Signal
from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from firmware_pi.watchdog import SystemdNotifier
from protocol import (
    Ack,
    EndReason,
    ProtocolError,
    ReplayError,
    SignatureError,
    TopicKind,
    verify_auth_response,
    verify_command,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # the longest the loop waits for a tap before serving the rest
RESEND_AFTER_S = 10.0  # resend everything if the oldest pending event is unacked this long
PUBLISH_BATCH = 100

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
        # Resend watchdog: the oldest pending seq and when it was first seen pending.
        self._oldest_pending: int | None = None
        self._oldest_pending_since = 0.0
        self._outbox_changed = True
        self._status_announced_at: float | None = None

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
        uid = self.reader.read(self.read_timeout_s)
        if uid is not None:
            now = self.clock.now()
            try:
                effects = self.controller.tap(uid, now, online=self.connected)
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
        self._publish_pending(now)
        self._announce_status(now)
        self.notifier.ping(now.mono)
        self.iterations += 1

    def _take_oops(self) -> int:
        with self._oops_lock:
            presses, self._oops_requests = self._oops_requests, 0
        if self.hardware.oops is not None:
            presses += self.hardware.oops.take_presses()
        return presses

    def _apply(self, effects: Sequence[Effect], now: Instant) -> None:
        """Events to the outbox first (durability), then the relay, then the signals."""
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
                    # Never silent: every refusal is counted, and logged at most every 10 s.
                    if now.mono - self._full_logged_at >= 10.0:
                        self._full_logged_at = now.mono
                        log.error("%s (%d refused so far)", exc, self.outbox.refused)
                else:
                    self._outbox_changed = True
            elif isinstance(effect, SetOutOfService):
                self.outbox.set_local_service(LocalService(effect.out_of_service, effect.reason))
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
        self.outbox.remember_command(command.command_id, command.expires_at, now=now.wall)
        self._apply(self.controller.command(command, now), now)

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
        if ack.rejected:
            # Kept by the server as rejected; the cumulative ack below drops them here.
            log.error("server rejected events with seq %s", ", ".join(map(str, ack.rejected)))
        removed = self.outbox.ack(ack.up_to_seq, outbox_id=ack.outbox_id)
        if removed:
            self._outbox_changed = True
            log.debug("ack up to seq %d removed %d events", ack.up_to_seq, removed)

    def _publish_pending(self, now: Instant) -> None:
        if self._outbox_changed:
            self._outbox_changed = False
            oldest = self.outbox.pending(limit=1)
            oldest_seq = oldest[0].seq if oldest else None
            if oldest_seq != self._oldest_pending:
                self._oldest_pending = oldest_seq
                self._oldest_pending_since = now.mono
        if self._oldest_pending is None or not self.connected:
            return
        if now.mono - self._oldest_pending_since > RESEND_AFTER_S:
            log.warning("seq %d unacked for %.0f s: resending pending events",
                        self._oldest_pending, now.mono - self._oldest_pending_since)
            self._sent_up_to = 0
            self._oldest_pending_since = now.mono
        if self._sent_up_to >= self.outbox.last_seq:
            return
        for event in self.outbox.pending(limit=PUBLISH_BATCH, after_seq=self._sent_up_to):
            if not self.link.publish_event(event):
                return
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
