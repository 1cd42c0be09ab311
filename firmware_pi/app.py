"""The controller process: one main loop between the reader, the state machine, the
outbox, the hardware and the MQTT link.

Only the main loop thread touches the state machine, the relay and the outbox writes;
the reader and the link hand their inputs over through thread-safe queues.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from firmware_pi.clock import Clock, Instant
from firmware_pi.config import ControllerConfig
from firmware_pi.controller import Controller, Effect, EmitEvent, SetRelay, ShowSignal
from firmware_pi.hardware import MachineHardware
from firmware_pi.link import Incoming, Link, LinkDown, LinkUp
from firmware_pi.outbox import Outbox
from firmware_pi.reader import CardReader
from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from protocol import (
    Ack,
    EndReason,
    ProtocolError,
    SignatureError,
    TopicKind,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # the longest the loop waits for a tap before serving the rest
RESEND_AFTER_S = 10.0  # resend everything if the oldest pending event is unacked this long
PUBLISH_BATCH = 100

ReaderT = TypeVar("ReaderT", bound=CardReader)


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
        if not self._ran:
            # Built but never started: there is no loop to do the closing.
            self._ran = True
            self._shutdown()
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("main loop did not stop within %.1f s; switching the relay off", timeout)
                self.hardware.relay.off()

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
            self.link.start()
            self.hardware.leds.offline = not self.connected
            while not self._stop_requested.is_set():
                self._step()
        except BaseException as exc:
            self.failure = exc
            log.critical("controller main loop failed; relay off", exc_info=True)
            raise
        finally:
            self._shutdown()

    # -- main loop ----------------------------------------------------------------------

    def _step(self) -> None:
        uid = self.reader.read(READ_TIMEOUT_S)
        if uid is not None:
            now = self.clock.now()
            try:
                effects = self.controller.tap(uid, now)
            except ProtocolError as exc:
                log.warning("ignoring unreadable badge %r: %s", uid, exc)
            else:
                self._apply(effects, now)
        for link_event in self.link.drain():
            self._on_link_event(link_event)
        now = self.clock.now()
        self._apply(self.controller.tick(now), now)
        self.hardware.leds.offline = not self.connected
        self._publish_pending(now)
        self.iterations += 1

    def _apply(self, effects: Sequence[Effect], now: Instant) -> None:
        """Events to the outbox first (durability), then the relay, then the signals."""
        for effect in effects:
            if isinstance(effect, EmitEvent):
                self.outbox.append(
                    effect.kind,
                    effect.data,
                    wall_time=now.wall,
                    mono_time=now.mono,
                    boot_id=self.boot_id,
                    controller_id=self.config.controller_id,
                )
                self._outbox_changed = True
        for effect in effects:
            if isinstance(effect, SetRelay):
                if effect.on:
                    self.hardware.relay.on()
                else:
                    self.hardware.relay.off()
        for effect in effects:
            if isinstance(effect, ShowSignal):
                self.hardware.leds.show(effect.signal)

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
        ):
            try:
                close()
            except Exception:
                log.exception("error closing the %s", name)
        log.info("controller stopped")
