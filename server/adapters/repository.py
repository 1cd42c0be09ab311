"""Repositories: the queries the service layer needs, over one SQLAlchemy session."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, aliased, joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from protocol import Level
from server.adapters.orm import (
    AccountLink,
    ApiToken,
    AuditEntry,
    Badge,
    BadgeCounterUse,
    BadgeDenial,
    Controller,
    ControllerCommand,
    ControllerFault,
    Enrollment,
    LoginSession,
    Machine,
    Member,
    MemberCategory,
    MemberRole,
    OutboxStream,
    ProblemReport,
    RawEvent,
    Training,
    TrainingType,
    TrainingTypeMachine,
    UsageSession,
    utcnow,
)
from server.domain.trainings import TrainingView, live_types_at_level

RAW_EVENT_TABLE = cast(Table, RawEvent.__table__)


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _page(
        self, query: Select[Any], *order_by: Any, limit: int, offset: int
    ) -> tuple[Sequence[Any], int]:
        """One page of the query in the given order, and how many rows match in all."""
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = query.order_by(*order_by).limit(limit).offset(offset)
        return self.session.scalars(page).all(), total


class MemberRepository(_Repository):
    def get(self, member_id: str) -> Member | None:
        return self.session.get(Member, member_id)

    def many(self, member_ids: set[str]) -> dict[str, Member]:
        """The members among these ids, in one query (their roles in one more)."""
        if not member_ids:
            return {}
        query = select(Member).where(Member.id.in_(sorted(member_ids)))
        return {member.id: member for member in self.session.scalars(query)}

    def add(self, member: Member) -> None:
        self.session.add(member)

    def by_email(self, email: str) -> Member | None:
        return self.session.scalar(select(Member).where(Member.email == email))

    def page(
        self,
        *,
        search: str | None = None,
        category: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[Member], int]:
        query = select(Member)
        if search:
            pattern = f"%{search.lower()}%"
            query = query.where(
                or_(func.lower(Member.name).like(pattern), func.lower(Member.email).like(pattern))
            )
        if category:
            query = query.where(Member.category == category)
        if active is not None:
            query = query.where(Member.active.is_(active))
        return self._page(query, Member.name, Member.id, limit=limit, offset=offset)

    def with_roles(self, roles: set[str]) -> set[str]:
        """Ids of active members holding any of the lab-wide roles."""
        query = (
            select(MemberRole.member_id)
            .join(Member, Member.id == MemberRole.member_id)
            .where(MemberRole.role.in_(roles), Member.active.is_(True))
        )
        return set(self.session.scalars(query).all())

    def lock_active_admins(self) -> set[str]:
        """Ids of the active admins, after locking every admin role row until the end of
        the transaction (SELECT … FOR UPDATE; SQLite has no row locks and ignores it)."""
        lock = select(MemberRole.member_id).where(MemberRole.role == "admin").with_for_update()
        self.session.execute(lock).all()
        return self.with_roles({"admin"})

    def names(self, member_ids: set[str]) -> dict[str, str]:
        """Display names of the given members."""
        if not member_ids:
            return {}
        query = select(Member.id, Member.name).where(Member.id.in_(member_ids))
        return {member_id: name for member_id, name in self.session.execute(query).all()}


class BadgeRepository(_Repository):
    def add(self, badge: Badge) -> None:
        self.session.add(badge)

    def by_uid(self, uid: str) -> Badge | None:
        return self.session.scalar(select(Badge).where(Badge.uid == uid))

    def get(self, badge_id: int) -> Badge | None:
        return self.session.get(Badge, badge_id)

    def counter_use(self, badge_id: int, counter: int) -> BadgeCounterUse | None:
        """The event that already wrote this anti-cloning counter, if any."""
        return self.session.get(BadgeCounterUse, (badge_id, counter))

    def add_counter_use(self, use: BadgeCounterUse) -> None:
        self.session.add(use)

    def protected_uids(self, uids: set[str]) -> set[str]:
        """Which of these badges carry the anti-cloning sector."""
        if not uids:
            return set()
        query = select(Badge.uid).where(Badge.uid.in_(uids), Badge.protection == "protected")
        return set(self.session.scalars(query).all())

    def of_member(self, member_id: str) -> Sequence[Badge]:
        return self.session.scalars(
            select(Badge).where(Badge.member_id == member_id).order_by(Badge.id)
        ).all()


class SnapshotRecord(NamedTuple):
    """A machine's new snapshot version, to record if its version is still `expected`."""

    machine_id: str
    expected: int
    version: int
    issued_at: int
    digest: str


class MachineRepository(_Repository):
    def get(self, machine_id: str) -> Machine | None:
        return self.session.get(Machine, machine_id)

    def add(self, machine: Machine) -> None:
        self.session.add(machine)

    def all(self) -> Sequence[Machine]:
        return self.session.scalars(select(Machine).order_by(Machine.name)).all()

    def all_with_controllers(self) -> Sequence[Machine]:
        """Every machine by name, with its controller loaded by one more query (not one
        query per machine)."""
        query = select(Machine).options(selectinload(Machine.controller)).order_by(Machine.name)
        return self.session.scalars(query).all()

    def ids(self) -> list[str]:
        return list(self.session.scalars(select(Machine.id)).all())

    def with_controllers(self, machine_ids: Sequence[str]) -> list[Machine]:
        """The machines among these ids, each with its controller loaded (one query)."""
        query = (
            select(Machine)
            .where(Machine.id.in_(machine_ids))
            .options(selectinload(Machine.controller))
            .order_by(Machine.id)
        )
        return list(self.session.scalars(query).all())

    def set_snapshot_if_version(
        self, machine_id: str, *, expected: int, version: int, issued_at: int, digest: str
    ) -> bool:
        """Record a new published snapshot unless another one was recorded since `expected`
        (compare-and-set on the version: False means someone else got there first)."""
        values = {
            "snapshot_version": version,
            "snapshot_issued_at": issued_at,
            "snapshot_digest": digest,
        }
        result = self.session.execute(
            update(Machine)
            .where(Machine.id == machine_id, Machine.snapshot_version == expected)
            .values(**values)
            # Not "evaluate" over every object of the session (quadratic when a batch
            # records a thousand machines): only this machine's object, if loaded.
            .execution_options(synchronize_session=False)
        )
        recorded = bool(getattr(result, "rowcount", 0) == 1)
        loaded = self.session.identity_map.get(self.session.identity_key(Machine, machine_id))
        if recorded and loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)
        return recorded

    def set_snapshots_if_versions(self, records: Sequence[SnapshotRecord]) -> bool:
        """`set_snapshot_if_version` for several machines in one executemany; True if
        every one was recorded. False: at least one lost, which is not known (the
        caller rolls back)."""
        if not records:
            return True
        table = cast(Table, Machine.__table__)
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.snapshot_version == bindparam("b_old"))
            .values(
                snapshot_version=bindparam("b_version"),
                snapshot_issued_at=bindparam("b_issued_at"),
                snapshot_digest=bindparam("b_digest"),
            )
        )
        rows = [
            {"b_id": r.machine_id, "b_old": r.expected, "b_version": r.version,
             "b_issued_at": r.issued_at, "b_digest": r.digest}
            for r in records
        ]  # fmt: skip
        result = self.session.execute(statement, rows)
        if getattr(result, "rowcount", -1) != len(records):  # an id matches one row at most
            return False
        for r in records:
            loaded = self.session.identity_map.get(self.session.identity_key(Machine, r.machine_id))
            if loaded is not None:
                set_committed_value(loaded, "snapshot_version", r.version)
                set_committed_value(loaded, "snapshot_issued_at", r.issued_at)
                set_committed_value(loaded, "snapshot_digest", r.digest)
        return True

    def lock_snapshot_versions(self, machine_ids: Sequence[str]) -> dict[str, int]:
        """`lock_snapshot_version` for many machines: their rows locked in id order."""
        query = (
            select(Machine.id, Machine.snapshot_version)
            .where(Machine.id.in_(machine_ids))
            .order_by(Machine.id)
            .with_for_update()
        )
        return {machine_id: version for machine_id, version in self.session.execute(query)}

    def lock_snapshot_version(self, machine_id: str) -> int | None:
        """The machine's latest committed snapshot version, its row locked until the end of
        the transaction (SELECT … FOR UPDATE on PostgreSQL; SQLite has no row locks)."""
        query = select(Machine.snapshot_version).where(Machine.id == machine_id)
        return self.session.scalar(query.with_for_update())


class ControllerRepository(_Repository):
    def get(self, controller_id: str) -> Controller | None:
        return self.session.get(Controller, controller_id)

    def many(self, controller_ids: set[str]) -> dict[str, Controller]:
        """The registered controllers among these ids, with their machines, in one query."""
        if not controller_ids:
            return {}
        query = (
            select(Controller)
            .where(Controller.id.in_(sorted(controller_ids)))
            .options(joinedload(Controller.machine))
        )
        return {controller.id: controller for controller in self.session.scalars(query)}

    def add(self, controller: Controller) -> None:
        self.session.add(controller)

    def all(self) -> Sequence[Controller]:
        return self.session.scalars(select(Controller).order_by(Controller.id)).all()


def _training_view(t: Training, lapse_months: int | None) -> TrainingView:
    return TrainingView(
        member_id=t.member_id,
        training_type_id=t.training_type_id,
        level=Level(t.level),
        granted_at=t.granted_at,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        lapse_months=lapse_months,
    )


class TrainingRepository(_Repository):
    def add(self, training: Training) -> None:
        self.session.add(training)

    def get(self, training_id: int) -> Training | None:
        return self.session.get(Training, training_id)

    def current(self, member_id: str, training_type_id: str) -> Training | None:
        """The member's unrevoked training of the type, if any."""
        return self.session.scalar(
            select(Training).where(
                Training.member_id == member_id,
                Training.training_type_id == training_type_id,
                Training.revoked_at.is_(None),
            )
        )

    def page(
        self,
        *,
        member_id: str | None = None,
        training_type_id: str | None = None,
        include_revoked: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[Training], int]:
        query = select(Training)
        if member_id:
            query = query.where(Training.member_id == member_id)
        if training_type_id:
            query = query.where(Training.training_type_id == training_type_id)
        if not include_revoked:
            query = query.where(Training.revoked_at.is_(None))
        return self._page(
            query, Training.granted_at.desc(), Training.id.desc(), limit=limit, offset=offset
        )

    def lapsable(self, training_type_ids: set[str] | None = None) -> Sequence[Training]:
        """Unrevoked trainings of types that lapse for disuse (of the given types if set)."""
        query = (
            select(Training)
            .join(TrainingType, TrainingType.id == Training.training_type_id)
            .where(Training.revoked_at.is_(None), TrainingType.lapse_months.is_not(None))
        )
        if training_type_ids is not None:
            query = query.where(Training.training_type_id.in_(training_type_ids))
        return self.session.scalars(query).all()

    def views(
        self, *, machine_id: str | None = None, member_ids: set[str] | None = None
    ) -> list[TrainingView]:
        """Unrevoked trainings of active members, covering the machine if one is given."""
        query = (
            select(Training, TrainingType.lapse_months)
            .join(TrainingType, TrainingType.id == Training.training_type_id)
            .join(Member, Member.id == Training.member_id)
            .where(Training.revoked_at.is_(None), Member.active.is_(True))
        )
        if machine_id is not None:
            query = query.join(
                TrainingTypeMachine,
                TrainingTypeMachine.training_type_id == Training.training_type_id,
            ).where(TrainingTypeMachine.machine_id == machine_id)
        if member_ids is not None:
            query = query.where(Training.member_id.in_(member_ids))
        return [_training_view(t, lapse_months) for t, lapse_months in self.session.execute(query)]

    def views_by_machine(self, machine_ids: Sequence[str]) -> dict[str, list[TrainingView]]:
        """`views(machine_id=…)` for many machines in one query."""
        query = (
            select(Training, TrainingType.lapse_months, TrainingTypeMachine.machine_id)
            .join(TrainingType, TrainingType.id == Training.training_type_id)
            .join(Member, Member.id == Training.member_id)
            .join(
                TrainingTypeMachine,
                TrainingTypeMachine.training_type_id == Training.training_type_id,
            )
            .where(
                Training.revoked_at.is_(None),
                Member.active.is_(True),
                TrainingTypeMachine.machine_id.in_(machine_ids),
            )
        )
        views: dict[str, list[TrainingView]] = {machine_id: [] for machine_id in machine_ids}
        for t, lapse_months, machine_id in self.session.execute(query).all():
            views[machine_id].append(_training_view(t, lapse_months))
        return views

    def last_used(self, member_ids: set[str] | None = None) -> dict[tuple[str, str], datetime]:
        """(member, training type) -> start of the member's latest session on its machines."""
        query = (
            select(
                UsageSession.member_id,
                TrainingTypeMachine.training_type_id,
                func.max(UsageSession.started_at),
            )
            .join(TrainingTypeMachine, TrainingTypeMachine.machine_id == UsageSession.machine_id)
            .where(UsageSession.member_id.is_not(None))
            .group_by(UsageSession.member_id, TrainingTypeMachine.training_type_id)
        )
        if member_ids is not None:
            query = query.where(UsageSession.member_id.in_(member_ids))
        result: dict[tuple[str, str], datetime] = {}
        for member_id, type_id, started in self.session.execute(query).all():
            # SQLite returns max() of the column as text: read it back through the column type.
            if isinstance(started, str):
                started = datetime.fromisoformat(started).replace(tzinfo=UTC)
            result[(str(member_id), type_id)] = started
        return result

    def active_badges(self, member_ids: set[str]) -> list[tuple[str, str]]:
        """(member id, badge uid) of the members' active badges."""
        if not member_ids:
            return []
        query = select(Badge.member_id, Badge.uid).where(
            Badge.member_id.in_(member_ids), Badge.status == "active"
        )
        return [(m, u) for m, u in self.session.execute(query).all()]


class TrainingTypeRepository(_Repository):
    def get(self, training_type_id: str) -> TrainingType | None:
        return self.session.get(TrainingType, training_type_id)

    def add(self, training_type: TrainingType) -> None:
        self.session.add(training_type)

    def all(self) -> Sequence[TrainingType]:
        return self.session.scalars(select(TrainingType).order_by(TrainingType.name)).all()

    def machines_sharing_lapse(self, member_id: str, machine_id: str) -> set[str]:
        """The machines of every lapsing training type covering `machine_id` of which
        the member holds an unrevoked training (as ids: a type may cover every machine
        of a network)."""
        return self.machines_sharing_lapse_of({(member_id, machine_id)})[(member_id, machine_id)]

    def machines_sharing_lapse_of(
        self, pairs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], set[str]]:
        """`machines_sharing_lapse` for several (member id, machine id) pairs, in one query."""
        found: dict[tuple[str, str], set[str]] = {pair: set() for pair in pairs}
        if not pairs:
            return found
        covering, sharing = aliased(TrainingTypeMachine), aliased(TrainingTypeMachine)
        query = (
            select(Training.member_id, covering.machine_id, sharing.machine_id)
            .distinct()
            .select_from(Training)
            .join(TrainingType, TrainingType.id == Training.training_type_id)
            .join(covering, covering.training_type_id == Training.training_type_id)
            .join(sharing, sharing.training_type_id == Training.training_type_id)
            .where(
                tuple_(Training.member_id, covering.machine_id).in_(sorted(pairs)),
                TrainingType.lapse_months.is_not(None),
                Training.revoked_at.is_(None),
            )
        )
        for member_id, machine_id, shared in self.session.execute(query):
            found[(member_id, machine_id)].add(shared)
        return found

    def covering(self, machine_id: str) -> Sequence[TrainingType]:
        query = (
            select(TrainingType)
            .join(TrainingTypeMachine, TrainingTypeMachine.training_type_id == TrainingType.id)
            .where(TrainingTypeMachine.machine_id == machine_id)
        )
        return self.session.scalars(query).all()

    def trainer_of(self, member_id: str, now: datetime | None = None) -> set[str]:
        """Training types the member is trainer of at `now` (default: the present): a live
        trainer-level training, neither revoked nor expired nor lapsed for disuse."""
        trainings = TrainingRepository(self.session)
        views = [v for v in trainings.views(member_ids={member_id}) if v.level is Level.TRAINER]
        if not views:
            return set()
        moment = now if now is not None else datetime.now(UTC)
        used = trainings.last_used({member_id})
        return live_types_at_level(views, used, moment, Level.TRAINER)


class UsageSessionRepository(_Repository):
    """Sessions; `preload` reads many at once, after which `get` answers them (and the
    ones added since, still unflushed) without a query, for this unit of work."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._known: dict[str, UsageSession | None] = {}

    def get(self, session_id: str) -> UsageSession | None:
        if session_id in self._known:
            return self._known[session_id]
        return self.session.get(UsageSession, session_id)

    def add(self, usage: UsageSession) -> None:
        self.session.add(usage)
        self._known[usage.id] = usage

    def preload(self, session_ids: set[str]) -> None:
        """Read these sessions in one query; `get` then answers them from memory."""
        wanted = sorted(session_ids - set(self._known))
        if not wanted:
            return
        query = select(UsageSession).where(UsageSession.id.in_(wanted))
        found = {usage.id: usage for usage in self.session.scalars(query)}
        for session_id in wanted:
            self._known[session_id] = found.get(session_id)

    def forget(self) -> None:
        """Drop what `preload` and `add` remembered (after a rollback)."""
        self._known.clear()

    def open_sessions(self) -> Sequence[UsageSession]:
        query = select(UsageSession).where(UsageSession.ended_at.is_(None))
        return self.session.scalars(query).all()

    def latest_open(self, machine_id: str) -> UsageSession | None:
        """The machine's running session (the latest, should a stale one linger)."""
        query = (
            select(UsageSession)
            .where(UsageSession.machine_id == machine_id, UsageSession.ended_at.is_(None))
            .order_by(UsageSession.started_at.desc())
        )
        return self.session.scalars(query).first()

    def page(
        self,
        *,
        machine_id: str | None = None,
        member_id: str | None = None,
        open_only: bool = False,
        visible_to: tuple[str, set[str]] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[UsageSession], int]:
        """Sessions, newest first; `visible_to` = (member, machines) limits to those
        of the member or on those machines."""
        query = select(UsageSession)
        if visible_to is not None:
            own, machines = visible_to
            query = query.where(
                or_(UsageSession.member_id == own, UsageSession.machine_id.in_(machines))
            )
        if machine_id:
            query = query.where(UsageSession.machine_id == machine_id)
        if member_id:
            query = query.where(UsageSession.member_id == member_id)
        if open_only:
            query = query.where(UsageSession.ended_at.is_(None))
        return self._page(
            query, UsageSession.started_at.desc(), UsageSession.id, limit=limit, offset=offset
        )


class DenialRepository(_Repository):
    def add(self, denial: BadgeDenial) -> None:
        self.session.add(denial)

    def page(
        self, *, machine_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[Sequence[BadgeDenial], int]:
        query = select(BadgeDenial)
        if machine_id:
            query = query.where(BadgeDenial.machine_id == machine_id)
        return self._page(
            query, BadgeDenial.at.desc(), BadgeDenial.id.desc(), limit=limit, offset=offset
        )


class HeldSeq(NamedTuple):
    """A seq a stream holds and the status of the row holding it."""

    seq: int
    status: str


class EventRepository(_Repository):
    def add(self, event: RawEvent) -> None:
        self.session.add(event)

    def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store raw events (dicts of every column but `id`) in one executemany.

        The statement is compiled once per dialect and handed to the driver with each
        row's values converted by the columns' own bind processors (the values they
        would get through SQLAlchemy, without its per-row, per-column work)."""
        if not rows:
            return
        connection = self.session.connection()
        sql, order, processors = _raw_event_insert(connection.dialect)
        params = [dict(row) for row in rows]
        for name, process in processors:
            done: dict[Any, Any] = {}  # a batch's rows share their receipt time
            for row in params:
                value = row[name]
                if value is not None:
                    try:
                        row[name] = done[value]
                    except KeyError:
                        row[name] = done[value] = process(value)
        if order is None:
            connection.exec_driver_sql(sql, params)
        else:  # a positional paramstyle (SQLite's qmark)
            connection.exec_driver_sql(sql, [tuple(row[k] for k in order) for row in params])

    def held_at_many(
        self, wanted: Mapping[tuple[str, str], Sequence[int]]
    ) -> dict[tuple[str, str, int], RawEvent]:
        """The events the streams hold at the given seqs (stream → seqs), in one query;
        the rows by (controller id, outbox id, seq)."""
        keys = sorted({(c, o, seq) for (c, o), seqs in wanted.items() for seq in seqs})
        if not keys:
            return {}
        query = select(RawEvent).where(
            tuple_(RawEvent.controller_id, RawEvent.outbox_id, RawEvent.seq).in_(keys)
        )
        return {
            (row.controller_id, row.outbox_id, row.seq): row
            for row in self.session.scalars(query)
            if row.controller_id is not None and row.outbox_id is not None and row.seq is not None
        }

    def above_acked(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[HeldSeq]]:
        """Per stream, (seq, status) of the rows it holds above the `acked_seq` its
        `outbox_stream` row has in the database, in one query for every stream."""
        if not keys:
            return {}
        query = (
            select(
                OutboxStream.controller_id, OutboxStream.outbox_id, RawEvent.seq, RawEvent.status
            )
            .select_from(RawEvent)
            .join(
                OutboxStream,
                and_(
                    OutboxStream.controller_id == RawEvent.controller_id,
                    OutboxStream.outbox_id == RawEvent.outbox_id,
                ),
            )
            .where(
                tuple_(OutboxStream.controller_id, OutboxStream.outbox_id).in_(sorted(set(keys))),
                RawEvent.seq > OutboxStream.acked_seq,
            )
        )
        found: dict[tuple[str, str], list[HeldSeq]] = {}
        for controller_id, outbox_id, seq, status in self.session.execute(query):
            if seq is not None:  # `seq >` leaves out the conflicts' empty seqs
                found.setdefault((controller_id, outbox_id), []).append(HeldSeq(seq, status))
        return found

    def conflict_seqs_many(
        self, keys: Sequence[tuple[str, str]], limit: int = 100
    ) -> dict[tuple[str, str], list[int]]:
        """Per stream, its lowest seqs that another event claimed (conflicts), in one
        query for every stream (streams without any left out)."""
        if not keys:
            return {}
        query = (
            select(RawEvent.controller_id, RawEvent.outbox_id, RawEvent.conflict_seq)
            .where(
                tuple_(RawEvent.controller_id, RawEvent.outbox_id).in_(sorted(set(keys))),
                RawEvent.status == "conflict",
                RawEvent.conflict_seq.is_not(None),
            )
            .distinct()
        )
        found: dict[tuple[str, str], list[int]] = {}
        for controller_id, outbox_id, seq in self.session.execute(query):
            if controller_id is not None and outbox_id is not None and seq is not None:
                found.setdefault((controller_id, outbox_id), []).append(seq)
        return {key: sorted(seqs)[:limit] for key, seqs in found.items()}

    def by_event_ids(self, event_ids: set[str]) -> dict[str, RawEvent]:
        """The rows that applied (or rejected) the events of these ids, in one query."""
        if not event_ids:
            return {}
        query = select(RawEvent).where(RawEvent.event_id.in_(sorted(event_ids)))
        return {row.event_id: row for row in self.session.scalars(query) if row.event_id}

    def by_event_id(self, event_id: str) -> RawEvent | None:
        """The row that applied (or rejected) the event of this id, if any."""
        return self.session.scalar(select(RawEvent).where(RawEvent.event_id == event_id))

    def at_seq(self, controller_id: str, outbox_id: str, seq: int) -> RawEvent | None:
        """The event the stream holds at this seq."""
        query = select(RawEvent).where(
            RawEvent.controller_id == controller_id,
            RawEvent.outbox_id == outbox_id,
            RawEvent.seq == seq,
        )
        return self.session.scalar(query)

    def conflict_recorded(
        self, controller_id: str, outbox_id: str, seq: int, event_id: str | None, payload: str
    ) -> bool:
        """Whether this very conflicting event (by id, else payload) is already stored."""
        query = select(RawEvent.id).where(
            RawEvent.controller_id == controller_id,
            RawEvent.outbox_id == outbox_id,
            RawEvent.conflict_seq == seq,
            RawEvent.status == "conflict",
        )
        if event_id is not None:
            query = query.where(RawEvent.payload_event_id == event_id)
        else:
            query = query.where(RawEvent.payload == payload)
        return self.session.scalar(query.limit(1)) is not None

    def conflicts_page(
        self, *, limit: int = 100, offset: int = 0
    ) -> tuple[Sequence[tuple[RawEvent, RawEvent | None, str | None]], int]:
        """Conflicts, newest first, each with the event holding its seq and its machine."""
        held = aliased(RawEvent)
        base = select(RawEvent).where(RawEvent.status == "conflict")
        total = self.session.scalar(select(func.count()).select_from(base.subquery())) or 0
        query = (
            select(RawEvent, held, Controller.machine_id)
            .outerjoin(
                held,
                (held.controller_id == RawEvent.controller_id)
                & (held.outbox_id == RawEvent.outbox_id)
                & (held.seq == RawEvent.conflict_seq),
            )
            .outerjoin(Controller, Controller.id == RawEvent.controller_id)
            .where(RawEvent.status == "conflict")
            .order_by(RawEvent.received_at.desc(), RawEvent.id.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = [(raw, held_row, machine) for raw, held_row, machine in self.session.execute(query)]
        return rows, total

    def count_by_status(self) -> dict[str, int]:
        query = select(RawEvent.status, func.count()).group_by(RawEvent.status)
        return {status: count for status, count in self.session.execute(query).all()}


_Processors = list[tuple[str, Callable[[Any], Any]]]


@functools.cache
def _raw_event_insert(dialect: Dialect) -> tuple[str, tuple[str, ...] | None, _Processors]:
    """The INSERT of a raw event row for this dialect, the order of its parameters
    (None: named), and the bind processors of the columns that have one."""
    columns = [c for c in RAW_EVENT_TABLE.columns if c.key != "id"]
    # As SQLAlchemy compiles an executemany: no RETURNING of the new ids.
    compiled = dialect.statement_compiler(
        dialect, insert(RAW_EVENT_TABLE), column_keys=[c.key for c in columns],
        for_executemany=True,
    )  # fmt: skip
    processors: _Processors = []
    for column in columns:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((column.key, cast(Callable[[Any], Any], process)))
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    return str(compiled), order, processors


class OutboxStreamRepository(_Repository):
    def get_or_create(self, controller_id: str, outbox_id: str) -> OutboxStream:
        stream = self.session.get(OutboxStream, (controller_id, outbox_id))
        if stream is None:
            stream = OutboxStream(controller_id=controller_id, outbox_id=outbox_id, acked_seq=0)
            self.session.add(stream)
        return stream

    def lock_many(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], OutboxStream]:
        """Like `lock`, for several streams at once, locked in key order (so that two
        processes locking overlapping sets wait for each other rather than deadlock)."""
        ordered = sorted(keys)
        if not ordered:
            return {}
        now = utcnow()
        dialect = self.session.get_bind().dialect.name
        insert_into = postgresql.insert if dialect == "postgresql" else sqlite.insert
        rows = [
            {"controller_id": controller_id, "outbox_id": outbox_id, "acked_seq": 0,
             "updated_at": now}
            for controller_id, outbox_id in ordered
        ]  # fmt: skip
        # One executemany, rows in key order: a round trip per stream cost a fleet of
        # controllers (one stream each) milliseconds per event.
        self.session.execute(insert_into(OutboxStream).on_conflict_do_nothing(), rows)
        query = (
            select(OutboxStream)
            .where(tuple_(OutboxStream.controller_id, OutboxStream.outbox_id).in_(ordered))
            .order_by(OutboxStream.controller_id, OutboxStream.outbox_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {(s.controller_id, s.outbox_id): s for s in self.session.scalars(query)}

    def lock(self, controller_id: str, outbox_id: str) -> OutboxStream:
        """The stream's row, created if new, locked until the transaction ends.

        PostgreSQL: the row lock (SELECT … FOR UPDATE) serialises every process
        ingesting this stream. SQLite: the insert takes the database's write lock, so the
        reads that follow see every earlier commit.
        """
        values = {
            "controller_id": controller_id,
            "outbox_id": outbox_id,
            "acked_seq": 0,
            "updated_at": utcnow(),
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.session.execute(insert(OutboxStream).values(**values).on_conflict_do_nothing())
        query = (
            select(OutboxStream)
            .where(OutboxStream.controller_id == controller_id)
            .where(OutboxStream.outbox_id == outbox_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return self.session.scalars(query).one()


class FaultRepository(_Repository):
    def add(self, fault: ControllerFault) -> None:
        self.session.add(fault)

    def page(
        self,
        *,
        machine_id: str | None = None,
        code: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[ControllerFault], int]:
        query = select(ControllerFault)
        if machine_id:
            query = query.where(ControllerFault.machine_id == machine_id)
        if code:
            query = query.where(ControllerFault.code == code)
        return self._page(
            query,
            ControllerFault.at.desc(),
            ControllerFault.id.desc(),
            limit=limit,
            offset=offset,
        )

    def count_by_code(self) -> dict[str, int]:
        query = select(ControllerFault.code, func.count()).group_by(ControllerFault.code)
        return {code: count for code, count in self.session.execute(query).all()}


class CategoryRepository(_Repository):
    def get(self, category_id: str) -> MemberCategory | None:
        return self.session.get(MemberCategory, category_id)

    def add(self, category: MemberCategory) -> None:
        self.session.add(category)

    def all(self) -> Sequence[MemberCategory]:
        return self.session.scalars(select(MemberCategory).order_by(MemberCategory.id)).all()


def _filter_audit(
    query: Select[Any],
    actor_id: str | None,
    action: str | None,
    object_type: str | None,
    object_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    """The audit log's filters, shared by the paged list and the streaming export."""
    equal = (
        (AuditEntry.actor_id, actor_id),
        (AuditEntry.action, action),
        (AuditEntry.object_type, object_type),
        (AuditEntry.object_id, object_id),
    )
    for column, value in equal:
        if value:
            query = query.where(column == value)
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    return query


class AuditRepository(_Repository):
    def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)

    def page(
        self,
        *,
        actor_id: str | None = None,
        action: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[AuditEntry], int]:
        query = _filter_audit(
            select(AuditEntry), actor_id, action, object_type, object_id, since, until
        )
        return self._page(
            query, AuditEntry.at.desc(), AuditEntry.id.desc(), limit=limit, offset=offset
        )


class CredentialRepository(_Repository):
    """Login sessions and API tokens, found by the hash of their secret."""

    def add(self, credential: LoginSession | ApiToken) -> None:
        self.session.add(credential)

    def login_session(self, token_hash: str) -> LoginSession | None:
        return self.session.get(LoginSession, token_hash)

    def delete_login_session(self, login: LoginSession) -> None:
        self.session.delete(login)

    def api_token(self, token_hash: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    def api_tokens_of(self, member_id: str) -> Sequence[ApiToken]:
        query = select(ApiToken).where(ApiToken.member_id == member_id).order_by(ApiToken.id)
        return self.session.scalars(query).all()

    def end_all_for(self, member_id: str, at: datetime, keep_login: str | None = None) -> None:
        """Log the member out everywhere (except the login whose token hash is
        `keep_login`) and revoke their tokens."""
        for login in self.session.scalars(
            select(LoginSession).where(LoginSession.member_id == member_id)
        ).all():
            if login.token_hash != keep_login:
                self.session.delete(login)
        for token in self.api_tokens_of(member_id):
            if token.revoked_at is None:
                token.revoked_at = at


class EnrollmentRepository(_Repository):
    def add(self, enrollment: Enrollment) -> None:
        self.session.add(enrollment)

    def get(self, enrollment_id: int) -> Enrollment | None:
        return self.session.get(Enrollment, enrollment_id)

    def pending(self, machine_id: str, now: datetime) -> Enrollment | None:
        """The latest enrollment still waiting for a badge on the machine."""
        query = (
            select(Enrollment)
            .where(
                Enrollment.machine_id == machine_id,
                Enrollment.completed_at.is_(None),
                Enrollment.expires_at > now,
            )
            .order_by(Enrollment.created_at.desc())
        )
        return self.session.scalars(query).first()


# -- audit log queries, personal data and retention (privacy) ----------------------------


class AuditQueries(_Repository):
    """The audit log read in id order, in batches (for exports that stream every row)."""

    def batch(
        self,
        *,
        after_id: int = 0,
        limit: int = 500,
        actor_id: str | None = None,
        action: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        query = _filter_audit(
            select(AuditEntry).where(AuditEntry.id > after_id),
            actor_id, action, object_type, object_id, since, until,
        )  # fmt: skip
        return self.session.scalars(query.order_by(AuditEntry.id).limit(limit)).all()

    def about(self, member_id: str, objects: Sequence[tuple[str, str]]) -> Sequence[AuditEntry]:
        """Entries where the member acted, or about the member or one of the objects."""
        conditions = [
            AuditEntry.actor_id == member_id,
            (AuditEntry.object_type == "member") & (AuditEntry.object_id == member_id),
        ]
        by_type: dict[str, list[str]] = {}
        for object_type, object_id in objects:
            by_type.setdefault(object_type, []).append(object_id)
        for object_type, ids in by_type.items():
            conditions.append(
                (AuditEntry.object_type == object_type) & AuditEntry.object_id.in_(ids)
            )
        query = select(AuditEntry).where(or_(*conditions)).order_by(AuditEntry.id)
        return self.session.scalars(query).all()


class PersonalDataQueries(_Repository):
    """Every row that is about one member (export and erasure)."""

    def trainings_of(self, member_id: str) -> Sequence[Training]:
        query = select(Training).where(Training.member_id == member_id).order_by(Training.id)
        return self.session.scalars(query).all()

    def sessions_of(self, member_id: str, badge_uids: Sequence[str]) -> Sequence[UsageSession]:
        """Sessions of the member or opened with one of their badges."""
        condition = UsageSession.member_id == member_id
        if badge_uids:
            condition = or_(condition, UsageSession.badge_uid.in_(list(badge_uids)))
        query = (
            select(UsageSession).where(condition).order_by(UsageSession.started_at, UsageSession.id)
        )
        return self.session.scalars(query).all()

    def denials_of(self, member_id: str, badge_uids: Sequence[str]) -> Sequence[BadgeDenial]:
        """Refused taps of the member or of any of their badges."""
        condition = BadgeDenial.member_id == member_id
        if badge_uids:
            condition = or_(condition, BadgeDenial.badge_uid.in_(list(badge_uids)))
        query = select(BadgeDenial).where(condition).order_by(BadgeDenial.at, BadgeDenial.id)
        return self.session.scalars(query).all()

    def enrollments_of(self, member_id: str) -> Sequence[Enrollment]:
        query = select(Enrollment).where(Enrollment.member_id == member_id).order_by(Enrollment.id)
        return self.session.scalars(query).all()

    def raw_events_mentioning(self, text: str) -> Sequence[RawEvent]:
        query = select(RawEvent).where(RawEvent.payload.contains(text, autoescape=True))
        return self.session.scalars(query).all()


class RawEventRetention(_Repository):
    def purge(self, received_before: datetime) -> int:
        """Delete raw events received before the time whose (controller, outbox, seq) the
        stream has acknowledged (or that carry no seq): their duplicates are still
        recognised by the stream's acked_seq, while events above a gap, which the ack
        computation still needs, are kept."""
        acked = (
            select(OutboxStream.acked_seq)
            .where(
                OutboxStream.controller_id == RawEvent.controller_id,
                OutboxStream.outbox_id == RawEvent.outbox_id,
            )
            .scalar_subquery()
        )
        condition = RawEvent.received_at < received_before
        removable = or_(RawEvent.seq.is_(None), RawEvent.seq <= func.coalesce(acked, 0))
        result = self.session.execute(
            delete(RawEvent)
            .where(condition, removable)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class ControllerCommandRepository(_Repository):
    def add(self, command: ControllerCommand) -> None:
        self.session.add(command)

    def get(self, command_id: str) -> ControllerCommand | None:
        return self.session.get(ControllerCommand, command_id)

    def pending_of(
        self, controller_ids: set[str], now: datetime
    ) -> dict[str, list[ControllerCommand]]:
        """Per controller, its unapplied, unexpired commands, oldest first, in one query
        (controllers without any left out)."""
        query = (
            select(ControllerCommand)
            .where(
                ControllerCommand.controller_id.in_(sorted(controller_ids)),
                ControllerCommand.applied_at.is_(None),
                ControllerCommand.expires_at > now,
            )
            .order_by(ControllerCommand.issued_at)
        )
        found: dict[str, list[ControllerCommand]] = {}
        for command in self.session.scalars(query):
            found.setdefault(command.controller_id, []).append(command)
        return found

    def of_machine(self, machine_id: str, limit: int = 50) -> Sequence[ControllerCommand]:
        query = (
            select(ControllerCommand)
            .where(ControllerCommand.machine_id == machine_id)
            .order_by(ControllerCommand.issued_at.desc())
            .limit(limit)
        )
        return self.session.scalars(query).all()


class AccountLinkRepository(_Repository):
    """One-time set-password links, found by the hash of their secret."""

    def add(self, link: AccountLink) -> None:
        self.session.add(link)

    def get(self, token_hash: str) -> AccountLink | None:
        return self.session.get(AccountLink, token_hash)

    def unused_of(self, member_id: str) -> Sequence[AccountLink]:
        query = select(AccountLink).where(
            AccountLink.member_id == member_id, AccountLink.used_at.is_(None)
        )
        return self.session.scalars(query).all()

    def latest_of(self, member_ids: set[str]) -> dict[str, AccountLink]:
        """Each member's latest link (for the invitation column of the member list)."""
        if not member_ids:
            return {}
        query = (
            select(AccountLink)
            .where(AccountLink.member_id.in_(member_ids))
            .order_by(AccountLink.created_at)
        )
        return {link.member_id: link for link in self.session.scalars(query).all()}


class ProblemReportRepository(_Repository):
    def add(self, report: ProblemReport) -> None:
        self.session.add(report)

    def of_machine(self, machine_id: str, limit: int = 20) -> Sequence[ProblemReport]:
        query = (
            select(ProblemReport)
            .where(ProblemReport.machine_id == machine_id)
            .order_by(ProblemReport.created_at.desc(), ProblemReport.id.desc())
            .limit(limit)
        )
        return self.session.scalars(query).all()
