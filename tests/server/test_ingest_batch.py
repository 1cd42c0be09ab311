"""A batch of events is stored, applied and acknowledged exactly as its events one by one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from protocol import Ack, EventKind, Level, events_topic
from server.adapters.migrations import upgrade
from server.adapters.orm import BadgeDenial, OutboxStream, RawEvent, UsageSession
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from server.service_layer.ingest import Outcome
from tests.server.conftest import KEY_HEX, SITE, EventFactory

RECEIVED_AT = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def second_database_url(database_url: str, tmp_path: Path) -> str:
    """Another empty migrated database on the same engine as `database_url`."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'second.sqlite3'}"
    else:
        from tests.fixtures.postgres import create_database, unique_database_name, with_database

        name = unique_database_name()
        create_database(database_url, name)
        url = with_database(database_url, name)
    upgrade(url)
    return url


def _lab(url: str) -> tuple[ServerRuntime, list[OutgoingMessage]]:
    runtime = ServerRuntime(Settings(database_url=url, site=SITE), mqtt_enabled=False)
    bus = runtime.bus
    for machine in ("laser", "cnc"):
        bus.handle(cmds.AddMachine(machine, machine.title(), SITE, key_hex=KEY_HEX))
    bus.handle(cmds.AddMember("Ada Lovelace", member_id="ada"))
    bus.handle(cmds.RegisterBadge("ada", "04A1B2C3"))
    bus.handle(cmds.GrantTraining("ada", "laser", Level.AUTONOMOUS))
    sent: list[OutgoingMessage] = []
    runtime.bus.publish = sent.append
    return runtime, sent


@pytest.fixture
def two_labs(
    database_url: str, second_database_url: str
) -> Iterator[list[tuple[ServerRuntime, list[OutgoingMessage]]]]:
    labs = [_lab(database_url), _lab(second_database_url)]
    yield labs
    for runtime, _ in labs:
        runtime.engine.dispose()


def _mixed_batch() -> list[cmds.IngestEvent]:
    """Two machines, three streams, in interleaved order: new events, a resend, a
    conflicting seq, a refused duration, an implausible wall time, a gap, a moved
    duplicate, an unreadable payload and an event on another machine's topic."""
    laser, cnc = EventFactory(), EventFactory(controller_id="cnc")
    moved = EventFactory(outbox_id=uuid.uuid4().hex)
    s1, s2 = uuid.uuid4().hex, uuid.uuid4().hex
    start = dict(badge_uid="04A1B2C3", member_id="ada", level="autonomous", snapshot_version=1)
    l1 = laser(EventKind.SESSION_STARTED, session_id=s1, **start)
    l2 = laser(EventKind.SESSION_HEARTBEAT, session_id=s1, elapsed_seconds=1.0, busy_seconds=0.0)
    l3 = laser(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")
    l4 = laser(EventKind.SESSION_HEARTBEAT, session_id=s1, elapsed_seconds=9e5, busy_seconds=0.0)
    l5 = laser(EventKind.SESSION_ENDED, session_id=s1, reason="badge", elapsed_seconds=4.0,
               busy_seconds=1.0)  # fmt: skip
    conflicting = EventFactory(outbox_id=laser.outbox_id, seq=2)(
        EventKind.BADGE_DENIED, badge_uid="04FFEE02", reason="unknown_badge"
    )
    future = laser(EventKind.BADGE_DENIED, badge_uid="04FFEE03", reason="not_trained")
    future = replace(future, wall_time=time.time() + 86400.0)
    c1 = cnc(EventKind.SESSION_STARTED, session_id=s2, **start)
    c2 = cnc(EventKind.BUSY_STARTED, session_id=s2)
    c3 = cnc(EventKind.SESSION_HEARTBEAT, session_id=s2, elapsed_seconds=2.0, busy_seconds=1.0)
    cnc.seq += 1  # seq 4 never arrives: the ack stops at 3
    c5 = cnc(EventKind.BUSY_ENDED, session_id=s2)
    moved_l1 = replace(l1, outbox_id=moved.outbox_id, seq=1)
    laser_topic, cnc_topic = events_topic(SITE, "laser"), events_topic(SITE, "cnc")
    ordered = [
        (laser_topic, l1.encode()), (cnc_topic, c1.encode()), (laser_topic, l2.encode()),
        (laser_topic, l2.encode()), (cnc_topic, c2.encode()), (laser_topic, l3.encode()),
        (laser_topic, conflicting.encode()), (laser_topic, b"garbage"),
        (cnc_topic, l4.encode()), (laser_topic, l4.encode()), (cnc_topic, c3.encode()),
        (laser_topic, l5.encode()), (cnc_topic, c5.encode()), (laser_topic, future.encode()),
        (laser_topic, moved_l1.encode()), (laser_topic, conflicting.encode()),
        (laser_topic, l1.encode()),
    ]  # fmt: skip
    return [cmds.IngestEvent(t, p, received_at=RECEIVED_AT) for t, p in ordered]


def _state(runtime: ServerRuntime) -> dict[str, Any]:
    """Everything ingest writes, without surrogate keys."""
    with runtime.new_uow() as uow:
        s = uow.session
        raw_columns = [c.key for c in RawEvent.__mapper__.column_attrs if c.key != "id"]
        raw = sorted(
            repr([getattr(r, c) for c in raw_columns]) for r in s.scalars(select(RawEvent))
        )
        columns = [c.key for c in UsageSession.__mapper__.column_attrs]
        sessions = sorted(
            repr([getattr(u, c) for c in columns]) for u in s.scalars(select(UsageSession))
        )
        denials = sorted(
            (d.event_id, d.machine_id, d.badge_uid, d.member_id or "", d.reason, d.at)
            for d in s.scalars(select(BadgeDenial))
        )
        streams = sorted((o.controller_id, o.outbox_id, o.acked_seq)
                         for o in s.scalars(select(OutboxStream)))  # fmt: skip
    return {"raw": raw, "sessions": sessions, "denials": denials, "streams": streams}


def _last_acks(sent: list[OutgoingMessage]) -> dict[tuple[str, str], Ack]:
    acks = [Ack.decode(m.payload) for m in sent if m.topic.endswith("/ack")]
    return {(a.controller_id, a.outbox_id): a for a in acks}


def test_ingest_batch_commits_and_acks_as_its_events_one_by_one(
    two_labs: list[tuple[ServerRuntime, list[OutgoingMessage]]],
) -> None:
    (one_by_one, _), (batched, _) = two_labs
    events = _mixed_batch()
    single = [one_by_one.bus.handle(event) for event in events]
    together = batched.bus.handle(cmds.IngestBatch(tuple(events)))
    assert [(o.outcome, o.error) for o in together] == [(o.outcome, o.error) for o in single]
    assert _state(batched) == _state(one_by_one)


def test_ingest_batch_sends_one_ack_per_stream_equal_to_the_last_single_ack(
    two_labs: list[tuple[ServerRuntime, list[OutgoingMessage]]],
) -> None:
    (one_by_one, sent_singly), (batched, sent_batched) = two_labs
    events = _mixed_batch()
    sent_singly.clear()
    sent_batched.clear()
    for event in events:
        one_by_one.bus.handle(event)
    batched.bus.handle(cmds.IngestBatch(tuple(events)))
    batch_acks = [m for m in sent_batched if m.topic.endswith("/ack")]
    assert len(batch_acks) == len(_last_acks(sent_batched)) == 3
    assert _last_acks(sent_batched) == _last_acks(sent_singly)


def test_ingest_batch_outcomes_cover_every_kind_of_message(
    two_labs: list[tuple[ServerRuntime, list[OutgoingMessage]]],
) -> None:
    (_, _), (batched, _) = two_labs
    outcomes = {o.outcome for o in batched.bus.handle(cmds.IngestBatch(tuple(_mixed_batch())))}
    assert outcomes == set(Outcome) - {Outcome.BAD_TOPIC}


def _statements_for_batch(runtime: ServerRuntime, streams: int) -> int:
    """SQL statements the ingest of one batch runs: a heartbeat from each of `streams`
    outboxes of the laser's controller, every session already open."""
    topic = events_topic(SITE, "laser")
    factories = [EventFactory() for _ in range(streams)]
    opened, beats = [], []
    for factory in factories:
        session_id = uuid.uuid4().hex
        opened.append(factory(EventKind.SESSION_STARTED, session_id=session_id,
                              badge_uid="04A1B2C3", member_id="ada", level="autonomous",
                              snapshot_version=1))  # fmt: skip
        beats.append(factory(EventKind.SESSION_HEARTBEAT, session_id=session_id,
                             elapsed_seconds=1.0, busy_seconds=0.0))  # fmt: skip

    def batch(events: list[Any]) -> cmds.IngestBatch:
        return cmds.IngestBatch(tuple(cmds.IngestEvent(topic, e.encode(), RECEIVED_AT)
                                      for e in events))  # fmt: skip

    runtime.bus.handle(batch(opened))
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counted.append(statement)

    sa_event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        outcomes = runtime.bus.handle(batch(beats))
    finally:
        sa_event.remove(runtime.engine, "before_cursor_execute", count)
    assert {o.outcome for o in outcomes} == {Outcome.ACCEPTED}
    return len(counted)


def test_ingest_batch_queries_do_not_grow_with_its_streams(
    two_labs: list[tuple[ServerRuntime, list[OutgoingMessage]]],
) -> None:
    # A fleet's batch holds an event or two per controller: a few queries per stream
    # (its row, held seqs, seqs above the ack, conflicts, rejected seqs) made a
    # thousand controllers' ingest cost milliseconds per event.
    (few, _), (many, _) = two_labs
    assert _statements_for_batch(many, 12) == _statements_for_batch(few, 2)


def _statements_for_starts(runtime: ServerRuntime, members: list[str]) -> int:
    """SQL statements the ingest of one batch runs: a session start by each of these
    (new, trained) members, each from an outbox of the laser's controller."""
    for i, member in enumerate(members):
        runtime.bus.handle(cmds.AddMember(member.title(), member_id=member))
        runtime.bus.handle(cmds.RegisterBadge(member, f"04{len(members):02X}{i:02X}00"))
        runtime.bus.handle(cmds.GrantTraining(member, "laser", Level.AUTONOMOUS))
    topic = events_topic(SITE, "laser")
    starts = [
        EventFactory()(EventKind.SESSION_STARTED, session_id=uuid.uuid4().hex,
                       badge_uid=f"04{len(members):02X}{i:02X}00", member_id=member,
                       level="autonomous", snapshot_version=1)
        for i, member in enumerate(members)
    ]  # fmt: skip
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counted.append(statement)

    sa_event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        batch = tuple(cmds.IngestEvent(topic, e.encode(), RECEIVED_AT) for e in starts)
        outcomes = runtime.bus.handle(cmds.IngestBatch(batch))
    finally:
        sa_event.remove(runtime.engine, "before_cursor_execute", count)
    assert {o.outcome for o in outcomes} == {Outcome.ACCEPTED}
    return len(counted)


def test_ingest_batch_session_starts_of_many_members_take_as_many_queries_as_two(
    two_labs: list[tuple[ServerRuntime, list[OutgoingMessage]]],
) -> None:
    # A fleet's controllers start sessions together after a restart: the member and the
    # machines sharing a lapse date read per start held the ingest thread ~10 ms each.
    (few, _), (many, _) = two_labs
    assert _statements_for_starts(many, [f"p{i}" for i in range(8)]) == _statements_for_starts(
        few, ["q0", "q1"]
    )
