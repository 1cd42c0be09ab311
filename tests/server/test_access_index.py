"""The online check's in-memory index: current after every change, equal to the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, text, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from protocol import (
    AuthRequest,
    AuthResponse,
    DenyReason,
    Level,
    auth_request_topic,
    auth_response_topic,
    verify_auth_response,
)
from server.adapters import orm
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.access_index import WATCHED, AccessIndex
from server.service_layer.commands import OutgoingMessage
from server.service_layer.configs import machine_grants
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from tests.server.conftest import KEY_HEX, SITE

KEY = bytes.fromhex(KEY_HEX)
ADA_BADGE = "04A1B2C3"


def _check(lab: ServerRuntime, uid: str) -> cmds.AnswerAuthRequest:
    """An online check from a controller holding the current snapshot (nothing to republish)."""
    with lab.new_uow() as uow:
        machine = uow.machines.get("laser")
        assert machine is not None
        version = machine.snapshot_version
    request = AuthRequest(uuid.uuid4().hex, "laser", uid, time.time(), snapshot_version=version)
    return cmds.AnswerAuthRequest(auth_request_topic(SITE, "laser"), request.encode())


def _ask(lab: ServerRuntime, sent: list[OutgoingMessage], uid: str) -> AuthResponse:
    command = _check(lab, uid)
    sent.clear()
    lab.bus.handle(command)
    [answer] = [m for m in sent if m.topic == auth_response_topic(SITE, "laser")]
    return verify_auth_response(answer.payload, KEY)


@pytest.fixture
def statements(lab: ServerRuntime) -> Iterator[list[str]]:
    """The SQL statements the server runs from now on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(lab.engine, "before_cursor_execute", record)
    yield seen
    event.remove(lab.engine, "before_cursor_execute", record)


def test_access_index_answers_a_repeated_check_without_sql(
    lab: ServerRuntime, sent: list[OutgoingMessage], statements: list[str]
) -> None:
    assert _ask(lab, sent, ADA_BADGE).granted
    command = _check(lab, ADA_BADGE)
    statements.clear()
    lab.bus.handle(command)
    assert verify_auth_response(sent[-1].payload, KEY).granted
    assert statements == []


def test_access_index_revoke_is_refused_by_the_very_next_check(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    assert _ask(lab, sent, ADA_BADGE).granted  # now in memory
    lab.bus.handle(cmds.RevokeTraining("ada", "laser"))
    answer = _ask(lab, sent, ADA_BADGE)
    assert (answer.granted, answer.reason) == (False, DenyReason.NOT_TRAINED)


def test_access_index_lost_badge_is_refused_by_the_very_next_check(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    assert _ask(lab, sent, ADA_BADGE).granted
    with lab.new_uow() as uow:
        badge = uow.badges.by_uid(ADA_BADGE)
        assert badge is not None
        badge_id = badge.id
    lab.bus.handle(cmds.SetBadgeStatus(badge_id, "lost"))
    answer = _ask(lab, sent, ADA_BADGE)
    assert (answer.granted, answer.reason) == (False, DenyReason.UNKNOWN_BADGE)


def test_access_index_grant_is_seen_by_the_very_next_check(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    assert _ask(lab, sent, "04FFEE01").reason is DenyReason.NOT_TRAINED
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED))
    answer = _ask(lab, sent, "04FFEE01")
    assert (answer.granted, answer.level) == (True, Level.SUPERVISED)


# -- the index alone, on an in-memory database ------------------------------------------

BASE = datetime(2026, 1, 1, tzinfo=UTC)
MACHINES = ("m0", "m1")
TYPES = ("t0", "t1", "t2")
MEMBERS = ("p0", "p1", "p2")
BADGES = ("B0", "B1", "B2", "B3", "B4")


def _database() -> sessionmaker[Session]:
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    orm.Base.metadata.create_all(engine)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory() as session:
        session.add(orm.MemberCategory(id="member", name="Member"))
        for machine in MACHINES:
            session.add(orm.Machine(id=machine, site=SITE, name=machine))
        for type_id in TYPES:
            session.add(orm.TrainingType(id=type_id, name=type_id))
        for member in MEMBERS:
            session.add(orm.Member(id=member, name=member))
        session.flush()
        for n, uid in enumerate(BADGES):
            session.add(orm.Badge(uid=uid, member_id=MEMBERS[n % len(MEMBERS)]))
        # A start where most changes matter: every member trained, every type covering.
        for type_id, machine in (("t0", "m0"), ("t1", "m0"), ("t1", "m1"), ("t2", "m1")):
            session.add(orm.TrainingTypeMachine(training_type_id=type_id, machine_id=machine))
        for member, type_id, level in zip(MEMBERS, TYPES, list(Level), strict=False):
            session.add(orm.Training(member_id=member, training_type_id=type_id,
                                     level=level.value, granted_at=_days(-10)))  # fmt: skip
        session.commit()
    return factory


def _days(n: int) -> datetime:
    return BASE + timedelta(days=n)


_day = st.integers(min_value=-400, max_value=400)
_operation = st.one_of(
    st.tuples(
        st.just("grant"),
        st.sampled_from(MEMBERS),
        st.sampled_from(TYPES),
        st.sampled_from(list(Level)),
        _day,
        st.none() | _day,
    ),
    st.tuples(st.just("revoke"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("cover"), st.sampled_from(TYPES), st.sampled_from(MACHINES), st.booleans()),
    st.tuples(st.just("lapse"), st.sampled_from(TYPES), st.none() | st.sampled_from([1, 6, 12])),
    st.tuples(
        st.just("badge"),
        st.sampled_from(BADGES),
        st.sampled_from(["active", "lost", "blocked"]),
    ),
    st.tuples(st.just("active"), st.sampled_from(MEMBERS), st.booleans()),
    st.tuples(st.just("session"), st.sampled_from(MEMBERS), st.sampled_from(MACHINES), _day),
)


def _apply(session: Session, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "grant":
        _, member, type_id, level, granted, expires = op
        expiry = None if expires is None else _days(expires)
        session.add(orm.Training(member_id=member, training_type_id=type_id, level=level.value,
                                 granted_at=_days(granted), expires_at=expiry))  # fmt: skip
    elif kind == "revoke":
        trainings = session.query(orm.Training).order_by(orm.Training.id).all()
        if trainings:
            trainings[op[1] % len(trainings)].revoked_at = BASE
    elif kind == "cover":
        _, type_id, machine, covered = op
        link = session.get(orm.TrainingTypeMachine, (type_id, machine))
        if covered and link is None:
            session.add(orm.TrainingTypeMachine(training_type_id=type_id, machine_id=machine))
        elif not covered and link is not None:
            session.delete(link)
    elif kind == "lapse":  # a set-based UPDATE, not a flush
        session.execute(
            update(orm.TrainingType).where(orm.TrainingType.id == op[1]).values(lapse_months=op[2])
        )
    elif kind == "badge":
        session.execute(update(orm.Badge).where(orm.Badge.uid == op[1]).values(status=op[2]))
    elif kind == "active":
        member = session.get(orm.Member, op[1])
        assert member is not None
        member.active = op[2]
    elif kind == "session":
        _, member, machine, started = op
        session.add(orm.UsageSession(id=uuid.uuid4().hex, machine_id=machine, controller_id="c",
                                     member_id=member, reported_member_id=member,
                                     started_at=_days(started)))  # fmt: skip


def _expected(uow: SqlAlchemyUnitOfWork, now: datetime) -> dict[tuple[str, str], object]:
    """Per (machine, badge): the snapshot's grant, else the badge's status (database)."""
    answers: dict[tuple[str, str], object] = {}
    for machine in MACHINES:
        grants = {g.badge_uid: g for g in machine_grants(uow, machine, now)}
        for uid in BADGES:
            badge = uow.badges.by_uid(uid)
            answers[(machine, uid)] = grants.get(uid) or (badge.status if badge else None)
    return answers


def _indexed(
    uow: SqlAlchemyUnitOfWork, index: AccessIndex, now: datetime
) -> dict[tuple[str, str], object]:
    facts = index.reader(uow)
    answers: dict[tuple[str, str], object] = {}
    for machine in MACHINES:
        access = facts.machine(machine)
        assert access is not None
        for uid in BADGES:
            answers[(machine, uid)] = access.grant(uid, now) or facts.badge_status(uid)
    return answers


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=st.lists(_operation, min_size=1, max_size=10),
    nows=st.lists(_day, min_size=10, max_size=10),
)
def test_access_index_answers_as_the_database_over_random_changes(
    operations: list[tuple[Any, ...]], nows: list[int]
) -> None:
    factory = _database()
    index = AccessIndex(max_age_s=3600)  # only commits may make it read again
    with SqlAlchemyUnitOfWork(factory) as uow:
        _indexed(uow, index, BASE)  # filled before the first change
    for op, now in zip(operations, nows, strict=False):
        with factory() as session:
            _apply(session, op)
            session.commit()
        with SqlAlchemyUnitOfWork(factory) as uow:
            indexed = _indexed(uow, index, _days(now))
        with SqlAlchemyUnitOfWork(factory) as uow:
            assert indexed == _expected(uow, _days(now))


def test_access_index_keeps_nothing_read_before_a_commit() -> None:
    factory = _database()
    index = AccessIndex(max_age_s=3600)
    with SqlAlchemyUnitOfWork(factory) as uow:
        facts = index.reader(uow)
        index.invalidate()  # a commit lands between the reader's start and its read
        assert facts.badge_status("B0") == "active"
    assert index.entries == 0


def test_access_index_rereads_after_max_age_what_it_cannot_see() -> None:
    factory = _database()
    clock = [0.0]
    index = AccessIndex(max_age_s=2.0, clock=lambda: clock[0])
    with SqlAlchemyUnitOfWork(factory) as uow:
        assert index.reader(uow).badge_status("B0") == "active"
    with factory.kw["bind"].begin() as connection:  # another writer: no session events
        connection.execute(text("UPDATE badge SET status = 'lost' WHERE uid = 'B0'"))
    with SqlAlchemyUnitOfWork(factory) as uow:
        assert index.reader(uow).badge_status("B0") == "active"
    clock[0] = 2.0
    with SqlAlchemyUnitOfWork(factory) as uow:
        assert index.reader(uow).badge_status("B0") == "lost"



def test_access_index_watches_attributes_the_models_have() -> None:
    tables = {mapper.local_table.name: mapper for mapper in orm.Base.registry.mappers}
    for table, names in WATCHED.items():
        assert table in tables
        assert names is None or names <= set(tables[table].attrs.keys())


def test_access_index_is_kept_when_a_controller_is_only_seen_again() -> None:
    factory = _database()
    index = AccessIndex(max_age_s=3600)
    with factory() as session:
        session.add(orm.Controller(id="c0", machine_id="m0", key_hex=KEY_HEX))
        session.commit()
    with SqlAlchemyUnitOfWork(factory) as uow:
        assert index.reader(uow).controller("c0") is not None
    with factory() as session:  # what every event does
        controller = session.get(orm.Controller, "c0")
        assert controller is not None
        controller.last_seen_at = BASE
        session.commit()
    assert index.entries == 1
    with factory() as session:
        session.add(orm.UsageSession(id="s1", machine_id="m0", controller_id="c0",
                                     member_id="p0", reported_member_id="p0",
                                     started_at=BASE))  # fmt: skip
        session.commit()
    assert index.entries == 0  # a new session may move a lapse date


def test_access_index_never_holds_more_than_its_bound() -> None:
    factory = _database()
    index = AccessIndex(max_age_s=3600, max_entries=3)
    with SqlAlchemyUnitOfWork(factory) as uow:
        facts = index.reader(uow)
        for n in range(10):  # made-up badges, as a misbehaving controller might send
            assert facts.badge_status(f"FF{n:04X}") is None
            assert index.entries <= 3


def test_access_index_is_kept_by_a_bulk_update_of_columns_it_does_not_read() -> None:
    factory = _database()
    index = AccessIndex(max_age_s=3600)
    with SqlAlchemyUnitOfWork(factory) as uow:
        assert index.reader(uow).badge_status("B0") == "active"
    with factory() as session:
        session.execute(update(orm.Member).values(name="Renamed"))
        session.commit()
    assert index.entries == 1
    with factory() as session:
        session.execute(update(orm.Member).values(name="Again", active=False))
        session.commit()
    assert index.entries == 0
