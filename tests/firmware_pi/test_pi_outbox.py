"""The durable outbox: seq numbering, cumulative acks, persistence across reopen."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pi_helpers import CONTROLLER_ID

from firmware_pi.outbox import Outbox, OutboxClosedError
from protocol import Event, EventKind, ProtocolError


def append(outbox: Outbox, n: int = 1, *, kind: EventKind = EventKind.BUSY_STARTED) -> list[Event]:
    data: dict[str, Any] = {"session_id": "s-1"} if kind is EventKind.BUSY_STARTED else {}
    return [
        outbox.append(
            kind, data, wall_time=1.5, mono_time=2.5, boot_id="boot-1", controller_id=CONTROLLER_ID
        )
        for _ in range(n)
    ]


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    with Outbox(tmp_path / "outbox.sqlite3") as ob:
        yield ob


def test_outbox_numbers_events_from_one(outbox: Outbox) -> None:
    assert [e.seq for e in append(outbox, 3)] == [1, 2, 3]


def test_outbox_returns_complete_event(outbox: Outbox) -> None:
    (event,) = append(outbox)

    assert event.controller_id == CONTROLLER_ID
    assert event.outbox_id == outbox.outbox_id
    assert (event.boot_id, event.wall_time, event.mono_time) == ("boot-1", 1.5, 2.5)
    assert event.kind is EventKind.BUSY_STARTED
    assert event.data == {"session_id": "s-1"}
    assert Event.decode(event.encode()) == event


def test_outbox_gives_each_event_its_own_id(outbox: Outbox) -> None:
    assert len({e.event_id for e in append(outbox, 5)}) == 5


def test_outbox_refuses_data_outside_the_protocol(outbox: Outbox) -> None:
    with pytest.raises(ProtocolError):
        outbox.append(
            EventKind.FAULT,
            {"code": "x"},
            wall_time=0,
            mono_time=0,
            boot_id="b",
            controller_id=CONTROLLER_ID,
        )

    assert len(outbox) == 0
    assert append(outbox)[0].seq == 1  # the refused event took no seq


def test_outbox_lists_pending_oldest_first(outbox: Outbox) -> None:
    appended = append(outbox, 5)

    assert outbox.pending() == appended


def test_outbox_limits_pending(outbox: Outbox) -> None:
    append(outbox, 5)

    assert [e.seq for e in outbox.pending(limit=2)] == [1, 2]


def test_outbox_lists_pending_after_seq(outbox: Outbox) -> None:
    append(outbox, 5)

    assert [e.seq for e in outbox.pending(after_seq=3)] == [4, 5]


def test_outbox_ack_deletes_cumulatively(outbox: Outbox) -> None:
    append(outbox, 5)

    removed = outbox.ack(3, outbox_id=outbox.outbox_id)

    assert removed == 3
    assert [e.seq for e in outbox.pending()] == [4, 5]
    assert len(outbox) == 2


def test_outbox_ack_is_idempotent(outbox: Outbox) -> None:
    append(outbox, 3)
    outbox.ack(2)

    assert outbox.ack(2) == 0
    assert len(outbox) == 1


def test_outbox_ignores_ack_for_foreign_outbox(outbox: Outbox) -> None:
    append(outbox, 3)

    assert outbox.ack(3, outbox_id="another-outbox") == 0
    assert len(outbox) == 3


def test_outbox_ignores_ack_beyond_last_seq(outbox: Outbox) -> None:
    append(outbox, 3)

    assert outbox.ack(10) == 0
    assert len(outbox) == 3


def test_outbox_keeps_seq_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        append(first, 3)
        first.ack(3)

    with Outbox(path) as second:
        assert second.last_seq == 3
        assert append(second)[0].seq == 4


def test_outbox_keeps_pending_events_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        appended = append(first, 2)

    with Outbox(path) as second:
        assert second.pending() == appended


def test_outbox_keeps_outbox_id_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        outbox_id = first.outbox_id

    with Outbox(path) as second:
        assert second.outbox_id == outbox_id


def test_outbox_new_database_gets_new_outbox_id(tmp_path: Path) -> None:
    with Outbox(tmp_path / "a.sqlite3") as a, Outbox(tmp_path / "b.sqlite3") as b:
        assert a.outbox_id != b.outbox_id


def test_outbox_uses_wal_and_full_sync(outbox: Outbox) -> None:
    with outbox._reading() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_outbox_refuses_use_after_close(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.close()

    with pytest.raises(OutboxClosedError):
        len(outbox)


class OutboxModel(RuleBasedStateMachine):
    """Random appends, acks (own and foreign) and reopens against a list model."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "outbox.sqlite3"
        self.outbox = Outbox(self.path)
        self.outbox_id = self.outbox.outbox_id
        self.pending_seqs: list[int] = []
        self.issued: list[int] = []

    @rule(n=st.integers(min_value=1, max_value=4))
    def append_events(self, n: int) -> None:
        for event in append(self.outbox, n):
            self.issued.append(event.seq)
            self.pending_seqs.append(event.seq)

    @rule(data=st.data())
    def ack_some(self, data: st.DataObject) -> None:
        up_to = data.draw(st.integers(min_value=0, max_value=(self.issued or [0])[-1]))
        self.outbox.ack(up_to, outbox_id=self.outbox_id)
        self.pending_seqs = [s for s in self.pending_seqs if s > up_to]

    @rule(up_to=st.integers(min_value=0, max_value=50))
    def ack_foreign_outbox(self, up_to: int) -> None:
        self.outbox.ack(up_to, outbox_id="foreign")

    @rule()
    def reopen(self) -> None:
        self.outbox.close()
        self.outbox = Outbox(self.path)
        assert self.outbox.outbox_id == self.outbox_id

    @invariant()
    def seqs_strictly_increase_without_gaps(self) -> None:
        assert self.issued == list(range(1, len(self.issued) + 1))

    @invariant()
    def pending_is_appended_minus_acked(self) -> None:
        assert [e.seq for e in self.outbox.pending(limit=1000)] == self.pending_seqs
        assert len(self.outbox) == len(self.pending_seqs)

    def teardown(self) -> None:
        self.outbox.close()
        self._dir.cleanup()


OutboxModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_outbox_matches_model_under_random_appends_acks_and_reopens = OutboxModel.TestCase


def test_outbox_opens_a_file_made_before_published_was_tracked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        append(first, 2)
    with sqlite3.connect(path) as db:  # the schema of earlier versions: no published column
        db.execute("ALTER TABLE events DROP COLUMN published")

    with Outbox(path) as outbox:
        assert [e.seq for e in outbox.pending()] == [1, 2]
        with outbox._reading() as db:
            flags = [row[0] for row in db.execute("SELECT published FROM events")]
        assert flags == [1, 1]  # may have been sent: never rewritten
        assert append(outbox)[0].seq == 3


def test_outbox_restream_keeps_event_ids_and_numbers_from_one(outbox: Outbox) -> None:
    events = append(outbox, 5)
    outbox.ack(2)
    old = outbox.outbox_id

    assert outbox.restream() == old

    moved = outbox.pending()
    assert outbox.outbox_id != old
    assert [(e.seq, e.event_id) for e in moved] == [
        (n, e.event_id) for n, e in enumerate(events[2:], start=1)]
    assert outbox.last_seq == 3
    assert append(outbox)[0].seq == 4


def test_outbox_restream_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        append(first, 3)
        first.restream()
        new_id = first.outbox_id
    with Outbox(path) as second:
        assert second.outbox_id == new_id
        assert [e.outbox_id for e in second.pending()] == [new_id] * 3


def test_outbox_atomic_rolls_back_every_write_on_error(outbox: Outbox) -> None:
    append(outbox, 1)

    with pytest.raises(RuntimeError), outbox.atomic():
        append(outbox, 2)
        outbox.remember_command("c-1", 100.0, now=1.0)
        raise RuntimeError("crash")

    assert [e.seq for e in outbox.pending()] == [1]
    assert (outbox.last_seq, len(outbox)) == (1, 1)
    assert not outbox.command_seen("c-1")
    assert append(outbox)[0].seq == 2


def test_outbox_open_moves_a_file_that_is_not_a_database_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"\x00garbage" * 512)

    with Outbox.open(path) as outbox:
        assert outbox.quarantined is not None
        assert outbox.quarantined.path.read_bytes().startswith(b"\x00garbage")
        assert len(outbox) == 0


def test_outbox_open_never_moves_a_locked_database_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        append(first, 2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds it (5 s busy timeout)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Outbox.open(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert list(tmp_path.glob("*.corrupt-*")) == []
    with Outbox.open(path) as outbox:
        assert [e.seq for e in outbox.pending()] == [1, 2]


def test_outbox_open_moves_a_database_with_damaged_pages_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        append(first, 300)
    damaged = bytearray(path.read_bytes())
    damaged[8192:11192] = b"\x5a" * 3000  # a torn write across pages 3 and 4
    path.write_bytes(bytes(damaged))

    with Outbox.open(path) as outbox:
        assert outbox.quarantined is not None
        assert "integrity check" in outbox.quarantined.reason
        assert append(outbox)[0].seq == 1  # a fresh outbox
