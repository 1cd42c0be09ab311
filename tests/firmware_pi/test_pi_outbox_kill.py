"""Random `kill -9` of a process writing the outbox (issue 7, "What it must show" 3).

Each cycle forks a child that opens the outbox and writes as fast as it can: single
events, heartbeats of a session (folded near the bound), atomic batches as a command
makes them (two events, command_applied and the command id in one transaction), and
published marks. It reports each write on a pipe only *after* its commit returned.
The parent sends SIGKILL at a random moment (also during the child's open), then
opens the outbox itself and checks:

- it opens cleanly (no quarantine, SQLite's quick_check passes), same outbox_id;
- the pending seqs are contiguous, from the parent's last ack to `last_seq`, and
  `last_seq` is at least every seq the child reported;
- every event the child reported is there under its seq and event id;
- every batch is all there or not at all, and the command ids held are exactly those
  of the batches committed;
- a row reported as published still holds the data it had when published.

Every tenth cycle the parent acks everything, as the server would.

CI runs 200 cycles (about 25 s on the loaded 2-core build machine). Another count or seed:

    FABLAB_KILL_CYCLES=2000 FABLAB_KILL_SEED=11 \
        .venv/bin/python -m pytest tests/firmware_pi/test_pi_outbox_kill.py -q
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from pi_helpers import CONTROLLER_ID

from firmware_pi.outbox import Outbox, OutboxFullError
from protocol import Event, EventKind

CYCLES = int(os.environ.get("FABLAB_KILL_CYCLES", "200"))
MAX_EVENTS = 100  # small, so that heartbeats fold and the bound is reached often
KILL_WITHIN_S = 0.08  # after the child has opened the outbox
KILL_DURING_OPEN = 0.15  # share of cycles killed at a random moment of the open itself
OPEN_WITHIN_S = 0.03

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _append(outbox: Outbox, kind: EventKind, data: dict[str, Any]) -> tuple[int, str]:
    event = outbox.append(kind, data, wall_time=time.time(), mono_time=time.monotonic(),
                          boot_id="kill-test", controller_id=CONTROLLER_ID)
    return event.seq, event.event_id


def _child(path: Path, out: int, seed: int) -> None:
    """Write to the outbox until killed; one line on `out` after each commit."""
    rng = random.Random(seed)

    def report(*fields: Any) -> None:
        os.write(out, (" ".join(map(str, fields)) + "\n").encode())

    outbox = Outbox(path, max_events=MAX_EVENTS)
    report("R")
    session = "s-1"  # one session across children: heartbeats fold into earlier ones
    report("E", *_append(outbox, EventKind.SESSION_STARTED, {
        "session_id": session, "badge_uid": "04A1B2C3", "member_id": "m",
        "level": "autonomous", "snapshot_version": 1}))
    elapsed = 0.0
    for n in range(1_000_000):
        op = rng.random()
        try:
            if op < 0.35:
                elapsed += 1.0
                report("E", *_append(outbox, EventKind.SESSION_HEARTBEAT, {
                    "session_id": session, "elapsed_seconds": elapsed, "busy_seconds": 0.0}))
            elif op < 0.6:
                report("E", *_append(outbox, EventKind.BUSY_STARTED, {}))
            elif op < 0.85:
                batch = f"b-{seed}-{n}"
                with outbox.atomic():
                    outbox.remember_command(batch, 4e9, now=time.time())
                    events = [
                        _append(outbox, EventKind.OOPS_REPORTED, {"message": batch}),
                        _append(outbox, EventKind.OOPS_REPORTED, {"message": batch}),
                        _append(outbox, EventKind.COMMAND_APPLIED,
                                {"command_id": batch, "command": "lock"}),
                    ]
                report("B", batch, *(f"{seq}:{event_id}" for seq, event_id in events))
            else:
                last = outbox.last_seq
                outbox.mark_published(last)
                (row,) = outbox.pending(limit=1, after_seq=last - 1) or [None]
                if row is not None:
                    report("P", row.seq, json.dumps(row.data, sort_keys=True))
        except OutboxFullError:
            pass


def _run_child(
    path: Path, seed: int, kill_after_s: float, *, after_open: bool
) -> list[list[str]]:
    """Fork the writer, SIGKILL it `kill_after_s` after it opened the outbox (or after
    the fork); the lines it reported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            _child(path, write_end, seed)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + (30.0 if after_open else kill_after_s)
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([read_end], [], [], left)
        if ready:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            if after_open and not chunks:  # "R": opened; the random delay starts now
                deadline = time.monotonic() + kill_after_s
            chunks.append(chunk)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the writer ended before it was killed (status {status})")
    text = b"".join(chunks).decode()
    return [line.split(" ") for line in text.splitlines() if line != "R"]


class Truth:
    """What the children reported committed, and what the parent acked."""

    def __init__(self) -> None:
        self.events: dict[int, str] = {}  # seq -> event id
        self.batches: dict[str, list[int]] = {}  # batch id -> its seqs
        self.published: dict[int, str] = {}  # seq -> data json when marked published
        self.acked = 0  # every seq <= this was acked (deleted) by the parent
        self.acked_batches: set[str] = set()

    def take(self, lines: list[list[str]]) -> None:
        for kind, *fields in lines:
            if kind == "E":
                self.events[int(fields[0])] = fields[1]
            elif kind == "B":
                pairs = [f.split(":") for f in fields[1:]]
                self.batches[fields[0]] = [int(seq) for seq, _ in pairs]
                self.events.update({int(seq): event_id for seq, event_id in pairs})
            elif kind == "P":
                self.published[int(fields[0])] = " ".join(fields[1:])


def _check(path: Path, truth: Truth, outbox_id: str | None) -> str:
    with Outbox.open(path, max_events=MAX_EVENTS) as outbox:
        assert outbox.quarantined is None, f"outbox did not open cleanly: {outbox.quarantined}"
        assert outbox_id in (None, outbox.outbox_id)
        pending = _all_pending(outbox, truth)
        seqs = [e.seq for e in pending]
        assert seqs == list(range(truth.acked + 1, outbox.last_seq + 1)), "seqs not contiguous"
        assert outbox.last_seq >= max(truth.events, default=0)
        stored = {e.seq: e for e in pending}
        for seq, event_id in truth.events.items():
            if seq > truth.acked:
                assert seq in stored, f"committed seq {seq} lost"
                assert stored[seq].event_id == event_id, f"seq {seq} holds another event"
        for seq, data in truth.published.items():
            if seq > truth.acked:
                assert json.dumps(stored[seq].data, sort_keys=True) == data, (
                    f"seq {seq} changed after it was published")
        batches: dict[str, list[int]] = {}
        for event in pending:
            batch = event.data.get("message") or event.data.get("command_id")
            if batch:
                batches.setdefault(batch, []).append(event.seq)
        for batch, batch_seqs in batches.items():
            assert len(batch_seqs) == 3, f"batch {batch} half written: seqs {batch_seqs}"
            assert batch_seqs == list(range(batch_seqs[0], batch_seqs[0] + 3))
        with outbox._reading() as db:
            held = {row[0] for row in db.execute("SELECT command_id FROM commands_seen")}
        assert held == set(batches) | truth.acked_batches, "a command id without its events"
        return outbox.outbox_id


def _all_pending(outbox: Outbox, truth: Truth) -> list[Event]:
    """Every event above the last ack: past the bound, starts, ends and commands still go
    in, and a fast child writes thousands between two acks."""
    return outbox.pending(limit=max(outbox.last_seq - truth.acked, 1))


def _ack_everything(path: Path, truth: Truth) -> None:
    with Outbox(path, max_events=MAX_EVENTS) as outbox:
        for event in _all_pending(outbox, truth):
            if event.kind is EventKind.COMMAND_APPLIED:
                truth.acked_batches.add(event.data["command_id"])
        truth.acked = outbox.last_seq
        outbox.ack(outbox.last_seq)


def test_outbox_survives_random_kill_9_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    rng = random.Random(int(os.environ.get("FABLAB_KILL_SEED", "7")))
    truth = Truth()
    outbox_id: str | None = None
    for cycle in range(CYCLES):
        during_open = rng.random() < KILL_DURING_OPEN
        delay = rng.uniform(0, OPEN_WITHIN_S if during_open else KILL_WITHIN_S)
        lines = _run_child(path, seed=cycle, kill_after_s=delay, after_open=not during_open)
        truth.take(lines)
        try:
            outbox_id = _check(path, truth, outbox_id)
        except (AssertionError, sqlite3.DatabaseError) as exc:
            raise AssertionError(f"cycle {cycle}: {exc}") from exc
        if cycle % 10 == 9:
            _ack_everything(path, truth)
    assert truth.events, "no child ever committed anything: the kill came too early"
