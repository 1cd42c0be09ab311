"""Issue 7, controller side: what the outbox and the app must keep true under faults.

Restored outbox backups and conflicting acks (defect 2), atomic commands under a
crash (7), bounded resends with backoff (10), never rewriting a published row (11)
and `fault` events (14). The app is stepped in the test's thread with a fake clock
and a fake link (pi_helpers.Rig); a small fake server plays the ack contract of
docs/protocol.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import (
    ALICE,
    CONTROLLER_ID,
    KEY,
    MACHINE,
    SITE,
    STRANGER,
    FakeClock,
    FakeLink,
    Rig,
    lab_snapshot,
    make_config,
)

from firmware_pi.bootstrap import build_controller
from firmware_pi.outbox import LocalService, Outbox
from firmware_pi.reader import CardReader, _PollingReader
from firmware_pi.watchdog import SystemdNotifier
from protocol import Ack, Command, CommandKind, Event, EventKind, TopicKind, encode_command


class Crash(BaseException):
    """The process dies here (nothing after this point runs)."""


def faults(r: Rig, code: str | None = None) -> list[dict[str, Any]]:
    return [d for d in r.events(EventKind.FAULT) if code is None or d["code"] == code]


def power_cut(r: Rig) -> None:
    """Only what is on disk survives: nothing is shut down cleanly."""
    r.app.outbox.close()
    r.app.hardware.close()


class FakeServer:
    """The server's side of the ack contract: idempotent on event id and on (stream,
    seq); a seq held under another event id is a conflict, never covered."""

    def __init__(self) -> None:
        self.streams: dict[str, dict[int, str]] = {}
        self.committed: dict[str, Event] = {}  # event id -> first committed version

    def receive(self, event: Event) -> Ack:
        stream = self.streams.setdefault(event.outbox_id, {})
        held = stream.get(event.seq)
        conflicts: tuple[int, ...] = ()
        if held is not None and held != event.event_id:
            conflicts = (event.seq,)
        elif held is None:
            stream[event.seq] = event.event_id
            self.committed.setdefault(event.event_id, event)
        up_to = 0
        while up_to + 1 in stream:
            up_to += 1
        return Ack(CONTROLLER_ID, event.outbox_id, up_to, (), conflicts)

    def serve(self, r: Rig, start: int = 0) -> int:
        """Answer every event the rig published since `start`; returns the new start."""
        published = r.link.published[start:]
        for event in published:
            r.link.deliver(TopicKind.ACK, self.receive(event).encode())
        r.step()
        return start + len(published)


# -- defect 2: restored outbox, ack beyond the last seq, conflicts ----------------------------


def test_outbox_restored_from_backup_loses_nothing_when_the_server_acks_beyond(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = FakeServer()
    made: set[str] = set()

    first = Rig(data, snapshot=lab_snapshot(), connected=True)
    first.tap(STRANGER)
    first.tap(STRANGER)  # seqs 1, 2: committed by the server, their acks not yet in
    for event in first.link.published:
        server.receive(event)
    made |= {e.event_id for e in first.link.published}
    first.close()
    backup = tmp_path / "backup.sqlite3"
    shutil.copy(first.config.outbox_path, backup)

    second = Rig(data, snapshot=None, connected=True)
    for _ in range(4):
        second.tap(STRANGER)  # seqs 3-6, acked and deleted
    server.serve(second)
    made |= {e.event_id for e in second.link.published}
    assert len(second.app.outbox) == 0
    old_stream = second.app.outbox.outbox_id
    second.close()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{second.config.outbox_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, second.config.outbox_path)  # the SD card restored from the backup

    third = Rig(data, snapshot=None, connected=True)
    try:
        third.tap(STRANGER)  # seq 3 again in the old stream: a different event
        made |= {e.event_id for e in third.app.outbox.pending()}
        start = 0
        for _ in range(10):  # ack, restream, resend, ack... until nothing is left
            start = server.serve(third, start)
            third.advance(1)
        assert set(server.committed) >= made, "an event was acked as covered and lost"
        assert len(third.app.outbox) == 0
        assert third.app.outbox.outbox_id != old_stream
        (restarted,) = [
            e for e in server.committed.values()
            if e.kind is EventKind.FAULT and e.data["code"] == "outbox_stream_restarted"
        ]
        assert old_stream in restarted.data["message"]
    finally:
        third.close()


def test_app_moves_unacked_events_to_a_new_stream_on_ack_beyond_last_seq(
    rig: Callable[..., Rig],
) -> None:
    r = rig(connected=True)
    r.tap(STRANGER)
    r.tap(ALICE)
    before = r.app.outbox.pending()
    old_stream = r.app.outbox.outbox_id

    r.link.deliver_ack(7, outbox_id=old_stream)  # this outbox never issued seq 7
    r.step()

    after = r.app.outbox.pending()
    assert r.app.outbox.outbox_id != old_stream
    assert [e.event_id for e in after[:2]] == [e.event_id for e in before]
    assert [e.seq for e in after] == list(range(1, len(after) + 1))
    assert {e.outbox_id for e in after} == {r.app.outbox.outbox_id}
    resent = [e for e in r.link.published if e.outbox_id == r.app.outbox.outbox_id]
    assert [e.event_id for e in resent[:2]] == [e.event_id for e in before]


def test_app_moves_unacked_events_to_a_new_stream_on_conflict(
    rig: Callable[..., Rig],
) -> None:
    r = rig(connected=True)
    r.tap(STRANGER)
    r.tap(STRANGER)
    ids = [e.event_id for e in r.app.outbox.pending()]
    old_stream = r.app.outbox.outbox_id

    r.link.deliver_ack(1, outbox_id=old_stream, conflicts=(2,))
    r.step()

    assert r.app.outbox.outbox_id != old_stream
    assert [e.event_id for e in r.app.outbox.pending()][:2] == ids  # nothing deleted


# -- defect 7: a command, its local state and command_applied in one transaction ---------------


@pytest.mark.parametrize("crash_at", ["local_state", "command_applied"])
def test_scenario_command_interrupted_by_a_crash_is_applied_when_resent(
    tmp_path: Path, crash_at: str
) -> None:
    first = Rig(tmp_path / "data", snapshot=lab_snapshot())
    now = int(first.clock.now().wall)
    payload = encode_command(
        Command("c-1", CONTROLLER_ID, SITE, MACHINE, CommandKind.OUT_OF_SERVICE, now, now + 300,
                reason="mirror cracked"),
        KEY,
    )
    outbox = first.app.outbox
    if crash_at == "local_state":
        def crash_state(state: LocalService) -> None:
            raise Crash

        outbox.set_local_service = crash_state  # type: ignore[method-assign]
    else:
        real_append = outbox.append

        def crash_append(kind: EventKind, data: dict[str, Any], **kw: Any) -> Event:
            if kind is EventKind.COMMAND_APPLIED:
                raise Crash
            return real_append(kind, data, **kw)

        outbox.append = crash_append  # type: ignore[method-assign]
    first.link.deliver(TopicKind.COMMAND, payload)
    with pytest.raises(Crash):
        first.step()
    power_cut(first)

    second = Rig(tmp_path / "data", snapshot=None)
    try:
        second.deliver(TopicKind.COMMAND, payload)  # the server resends it
        assert second.app.controller.out_of_service
        assert second.app.outbox.local_service().out_of_service
        applied = [d["command_id"] for d in second.events(EventKind.COMMAND_APPLIED)]
        assert applied == ["c-1"]
        second.deliver(TopicKind.COMMAND, payload)  # now a replay: ignored
        assert len(second.events(EventKind.COMMAND_APPLIED)) == 1
    finally:
        second.close()


def test_app_records_command_id_state_and_event_in_one_transaction(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    commits: list[int] = []
    with r.app.outbox._reading() as db:
        db.set_trace_callback(lambda sql: commits.append(1) if sql == "COMMIT" else None)
    r.command(CommandKind.OUT_OF_SERVICE, reason="belt")
    with r.app.outbox._reading() as db:
        db.set_trace_callback(None)
    assert len(commits) == 1
    assert r.app.outbox.command_seen("c-1")


# -- defect 10: resend only what the ack has not covered, with backoff --------------------------


def resends_of(r: Rig, seq: int) -> int:
    return sum(1 for e in r.link.published if e.seq == seq) - 1


def test_app_resends_unacked_events_with_exponential_backoff(rig: Callable[..., Rig]) -> None:
    r = rig(connected=True)
    r.tap(STRANGER)
    assert resends_of(r, 1) == 0

    r.advance(75)  # no ack at all: resends after 10, 20 and 40 more seconds

    assert resends_of(r, 1) == 3


def test_app_resets_resend_backoff_when_the_ack_progresses(rig: Callable[..., Rig]) -> None:
    r = rig(connected=True)
    r.tap(STRANGER)
    r.tap(STRANGER)
    r.advance(75)  # backoff grown to 80 s
    r.link.deliver_ack(1, outbox_id=r.app.outbox.outbox_id)
    r.step()
    before = resends_of(r, 2)

    r.advance(12)

    assert resends_of(r, 2) == before + 1


def test_app_resends_only_a_bounded_window_of_the_oldest_unacked_events(
    rig: Callable[..., Rig],
) -> None:
    r = rig(connected=True)
    for _ in range(150):
        r.busy.is_busy = not r.busy.is_busy
        r.step(1)
    r.step(3)
    assert r.link.published_seqs() == list(range(1, 151))
    r.link.deliver_ack(20, outbox_id=r.app.outbox.outbox_id)
    r.step()

    r.advance(15)

    resent = r.link.published_seqs()[150:]
    assert resent == list(range(21, 121))


# -- defect 11: a published row is never changed -------------------------------------------------


def test_app_never_rewrites_a_heartbeat_it_has_published(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(heartbeat_interval_s=60), connected=True, outbox_max_events=100)
    r.tap(ALICE)
    for _ in range(85):  # the server acks nothing: the outbox nears its bound
        r.busy.is_busy = not r.busy.is_busy
        r.step(1)
    r.advance(600, every=5)  # ten heartbeats, each published when made

    stored = {e.seq: e for e in r.app.outbox.pending(limit=1000)}
    for sent in r.link.published:
        assert stored[sent.seq] == sent, f"seq {sent.seq} changed after it was published"
    heartbeats = r.events(EventKind.SESSION_HEARTBEAT)
    assert [h["elapsed_seconds"] for h in heartbeats][-1] >= 600


def test_outbox_coalesces_only_never_published_heartbeats(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_events=10, warn_ratio=0.5) as outbox:
        def beat(elapsed: float) -> Event:
            return outbox.append(
                EventKind.SESSION_HEARTBEAT,
                {"session_id": "s", "elapsed_seconds": elapsed, "busy_seconds": 0.0},
                wall_time=elapsed, mono_time=elapsed, boot_id="b", controller_id=CONTROLLER_ID,
            )

        for i in range(5):
            beat(float(i))
        folded = beat(5.0)
        assert folded.seq == 5  # never published: folded in place
        outbox.mark_published(5)
        appended = beat(6.0)
        assert appended.seq == 6
        assert outbox.pending()[4].data["elapsed_seconds"] == 5.0
        assert beat(7.0).seq == 6  # seq 6 is not published yet: folded


# -- defect 14: fault events -----------------------------------------------------------------------


class FailingPollReader(_PollingReader):
    """A polled reader whose hardware fails until `healthy` is set."""

    def __init__(self) -> None:
        self.healthy = False
        super().__init__(start=False)

    def _poll(self) -> str | None:
        if not self.healthy:
            raise OSError("SPI transfer failed")
        return None


def test_app_reports_a_failing_reader_once_as_a_fault(tmp_path: Path) -> None:
    reader = FailingPollReader()
    r = Rig(tmp_path / "data", snapshot=lab_snapshot(), reader=reader)
    try:
        for _ in range(40):
            reader.poll_once()
            r.step(1)
        (fault,) = faults(r, "reader_failure")
        assert "SPI transfer failed" in fault["message"]
        assert not r.relay_on
    finally:
        r.close()


class BrokenReader(CardReader):
    def read(self, timeout: float) -> str | None:
        raise OSError("reader unplugged")


def test_app_reports_a_reader_that_raises_before_the_loop_stops(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "data")
    app = build_controller(cfg, pin_factory=MockFactory(), reader=BrokenReader(),
                           clock=FakeClock(), link=FakeLink())
    app.read_timeout_s = 0.0
    app.begin()
    with pytest.raises(OSError):
        app.step()
    app.stop()
    with Outbox(cfg.outbox_path) as outbox:
        (fault,) = [e.data for e in outbox.pending() if e.kind is EventKind.FAULT]
    assert fault["code"] == "reader_failure"
    assert "reader unplugged" in fault["message"]


def test_app_reports_a_full_outbox_once_as_a_fault(rig: Callable[..., Rig]) -> None:
    r = rig(outbox_max_events=100)
    for _ in range(130):
        r.busy.is_busy = not r.busy.is_busy
        r.step(1)

    (fault,) = faults(r, "outbox_full")
    assert "100" in fault["message"]


def test_app_quarantines_a_corrupt_outbox_and_reports_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "outbox.sqlite3").write_bytes(b"this is not an sqlite database" * 200)

    r = Rig(data, snapshot=lab_snapshot())
    try:
        assert not r.relay_on
        (fault,) = faults(r, "outbox_corrupt")
        quarantined = list(data.glob("outbox.sqlite3.corrupt-*"))
        assert len(quarantined) == 1
        assert quarantined[0].read_bytes().startswith(b"this is not")
        assert quarantined[0].name in fault["message"]
        r.tap(ALICE)  # a fresh outbox, working
        assert r.relay_on
    finally:
        r.close()


def test_app_quarantines_a_corrupt_snapshot_and_reports_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "snapshot.json").write_bytes(b'{"snapshot": {"version": 3, "perm')

    r = Rig(data, snapshot=None)
    try:
        (fault,) = faults(r, "snapshot_corrupt")
        assert "snapshot.json" in fault["message"]
        assert list(data.glob("snapshot.json.corrupt-*"))
        assert not (data / "snapshot.json").exists()
        r.tap(ALICE)
        assert not r.relay_on
        assert r.events(EventKind.BADGE_DENIED)[-1]["reason"] == "no_snapshot"
    finally:
        r.close()


def test_app_reports_a_watchdog_near_miss(tmp_path: Path) -> None:
    notifier = SystemdNotifier(environ={"WATCHDOG_USEC": "10000000"})  # 10 s
    clock = FakeClock()
    r = Rig(tmp_path / "data", snapshot=lab_snapshot(), notifier=notifier, clock=clock)
    try:
        r.advance(30)  # one iteration a second: fine
        assert faults(r, "watchdog_near_miss") == []
        clock.advance(7)  # the loop stalled 7 s of a 10 s watchdog
        r.step(1)
        (fault,) = faults(r, "watchdog_near_miss")
        assert "7" in fault["message"]
    finally:
        r.close()
