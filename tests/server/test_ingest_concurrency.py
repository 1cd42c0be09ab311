"""Two server processes ingesting one controller stream at once (PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select, text

from protocol import EventKind, events_topic
from server.adapters.migrations import upgrade
from server.adapters.orm import OutboxStream
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from server.service_layer.ingest import IngestOutcome, Outcome
from server.service_layer.ingest_batch import ingest_event
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from tests.server.conftest import KEY_HEX, SITE, EventFactory

TIMEOUT = 20.0


class PausedCommitUow(SqlAlchemyUnitOfWork):
    """Holds its transaction open at commit until released: the other process runs then."""

    def __init__(self, runtime: ServerRuntime) -> None:
        super().__init__(runtime.session_factory)
        self.reached = threading.Event()
        self.release = threading.Event()

    def commit(self) -> None:
        self.reached.set()
        assert self.release.wait(TIMEOUT)
        super().commit()


@pytest.fixture
def pg_lab(fresh_postgres_url: str) -> Iterator[ServerRuntime]:
    upgrade(fresh_postgres_url)
    runtime = ServerRuntime(
        Settings(database_url=fresh_postgres_url, site=SITE), mqtt_enabled=False
    )
    runtime.bus.handle(cmds.AddMachine("laser", "Laser cutter", SITE, key_hex=KEY_HEX))
    yield runtime
    runtime.engine.dispose()


def _waiting_on_a_lock(runtime: ServerRuntime) -> bool:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with runtime.engine.connect() as connection:
        return bool(connection.execute(query).scalar())


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_ingest_two_processes_interleaving_one_stream_ack_every_committed_seq(
    pg_lab: ServerRuntime,
) -> None:
    events = EventFactory()
    topic = events_topic(SITE, "laser")
    # Events rejected by validation touch no other row: only the stream orders them.
    first, second, third = (
        events(EventKind.BADGE_DENIED, badge_uid=f"04FFEE0{i}", reason="no_such_reason")
        for i in range(3)
    )
    pg_lab.bus.handle(cmds.IngestEvent(topic, first.encode()))
    paused = PausedCommitUow(pg_lab)
    errors: list[BaseException] = []

    def process_a() -> None:  # ingests seq 3, its commit held back
        try:
            with paused as uow:
                ingest_event(cmds.IngestEvent(topic, third.encode()), uow)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def process_b() -> None:  # ingests seq 2 meanwhile
        try:
            pg_lab.bus.handle(cmds.IngestEvent(topic, second.encode()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a = threading.Thread(target=process_a)
    a.start()
    assert paused.reached.wait(TIMEOUT)
    b = threading.Thread(target=process_b)
    b.start()
    _wait_for(lambda: not b.is_alive() or _waiting_on_a_lock(pg_lab), "process B to block")
    paused.release.set()
    a.join(TIMEOUT)
    b.join(TIMEOUT)
    assert not errors
    with pg_lab.new_uow() as uow:
        assert uow.session.scalar(select(OutboxStream.acked_seq)) == 3


def test_ingest_batch_colliding_with_another_process_is_redone_one_by_one(
    pg_lab: ServerRuntime,
) -> None:
    stream_one = EventFactory()
    stream_two = EventFactory()  # the same controller's next outbox stream
    topic = events_topic(SITE, "laser")
    moved = stream_one(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")
    resent = replace(moved, outbox_id=stream_two.outbox_id, seq=stream_two.seq + 1)
    stream_two.seq += 1
    later = stream_two(EventKind.BADGE_DENIED, badge_uid="04FFEE02", reason="not_trained")
    paused = PausedCommitUow(pg_lab)
    errors: list[BaseException] = []
    outcomes: list[IngestOutcome] = []

    def process_a() -> None:  # commits the event on its first stream, held back
        try:
            with paused as uow:
                ingest_event(cmds.IngestEvent(topic, moved.encode()), uow)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def process_b() -> None:  # the same event resent on the next stream, with another
        try:
            batch = cmds.IngestBatch(
                (cmds.IngestEvent(topic, resent.encode()), cmds.IngestEvent(topic, later.encode()))
            )
            outcomes.extend(pg_lab.bus.handle(batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a = threading.Thread(target=process_a)
    a.start()
    assert paused.reached.wait(TIMEOUT)
    b = threading.Thread(target=process_b)
    b.start()
    _wait_for(lambda: not b.is_alive() or _waiting_on_a_lock(pg_lab), "process B to block")
    paused.release.set()
    a.join(TIMEOUT)
    b.join(TIMEOUT)
    assert not errors
    assert [o.outcome for o in outcomes] == [Outcome.DUPLICATE, Outcome.ACCEPTED]
