"""What an online badge check reads, from the database or from an in-memory index.

An online check (`auth/request`) needs three facts: the asking controller (its machine
and key), the machine's access (the trainings covering it, its members' active badges,
their last uses for lapses, its snapshot version) and, for a refusal, the badge's
status. `DatabaseAccess` reads them through the repositories, as the snapshot does.
`AccessIndex` keeps what it read in memory and answers from there while it is known to
be current:

- every commit in this process that changed what these facts are read from (an ORM
  flush adding or deleting a row of a `WATCHED` table or changing one of its watched
  attributes; an INSERT / DELETE on such a table run through a session, an UPDATE
  unless it sets none of the watched attributes, any SQL text too) empties the index
  once the commit has returned, so the next check reads again: a grant, a revoke, a
  badge status, a member deactivated, a new session moving a lapse date, a new
  snapshot version, a controller's credentials;
- an entry is read again after `max_age_s`, for the writers it cannot observe (the CLI,
  another server process on the same database);
- what depends on the time (expiry, lapse) is computed at each check from the rows
  read, never stored as a verdict.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session

from server.domain.snapshots import BadgeGrant
from server.domain.trainings import TrainingView, effective_permissions

if TYPE_CHECKING:
    from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

# The tables the facts of an online check are read from and, for a row changed through
# the ORM, the attributes that matter (None: all). A controller's `last_seen_at`, set by
# every event, or a session's heartbeat do not empty the index; a new session does.
WATCHED: dict[str, frozenset[str] | None] = {
    "member": frozenset({"id", "active", "category"}),
    "billing_category_pricing": None,
    "badge": frozenset({"uid", "member_id", "status"}),
    "machine": frozenset({"id", "snapshot_version"}),
    "controller": frozenset({"id", "machine_id", "key_hex"}),
    "training": None,
    "training_type": frozenset({"id", "lapse_months", "machines"}),
    "training_type_machine": None,
    "usage_session": frozenset({"member_id", "machine_id", "started_at"}),
}
WATCHED_TABLES = frozenset(WATCHED)

T = TypeVar("T")


@dataclass(frozen=True)
class ControllerEntry:
    """A registered controller: the machine it serves and its signing key."""

    controller_id: str
    machine_id: str
    key_hex: str


@dataclass(frozen=True)
class MachineAccess:
    """The rows that decide who may use one machine, read at one moment."""

    machine_id: str
    snapshot_version: int
    # Never changed once built: an index shares them between threads.
    member_by_badge: Mapping[str, str]  # active badge uid -> member with a training here
    trainings: Mapping[str, list[TrainingView]]  # member -> unrevoked trainings here
    last_used: dict[tuple[str, str], datetime]  # (member, training type) -> last start

    def grant(self, uid: str, now: datetime) -> BadgeGrant | None:
        """The badge's grant at `now`, as the machine's snapshot built at `now` lists it."""
        member_id = self.member_by_badge.get(uid)
        if member_id is None:
            return None
        permissions = effective_permissions(self.trainings[member_id], self.last_used, now)
        permission = permissions.get(member_id)
        if permission is None:
            return None
        return BadgeGrant(uid, member_id, permission.level, permission.expires_at)


class AccessFacts(Protocol):
    """Where an online check reads its facts."""

    def controller(self, controller_id: str) -> ControllerEntry | None: ...

    def machine(self, machine_id: str) -> MachineAccess | None: ...

    def badge_status(self, uid: str) -> str | None: ...

    def prepaid_categories(self) -> frozenset[str]: ...

    def member_category(self, member_id: str) -> str | None: ...


class DatabaseAccess:
    """The facts read through the unit of work's repositories."""

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        self.uow = uow

    def controller(self, controller_id: str) -> ControllerEntry | None:
        controller = self.uow.controllers.get(controller_id)
        if controller is None:
            return None
        return ControllerEntry(controller.id, controller.machine_id, controller.key_hex)

    def machine(self, machine_id: str) -> MachineAccess | None:
        machine = self.uow.machines.get(machine_id)
        if machine is None:
            return None
        trainings: dict[str, list[TrainingView]] = {}
        for view in self.uow.trainings.views(machine_id=machine_id):
            trainings.setdefault(view.member_id, []).append(view)
        members = set(trainings)
        return MachineAccess(
            machine_id=machine_id,
            snapshot_version=machine.snapshot_version,
            member_by_badge={uid: m for m, uid in self.uow.trainings.active_badges(members)},
            trainings=trainings,
            last_used=self.uow.trainings.last_used(members) if members else {},
        )

    def badge_status(self, uid: str) -> str | None:
        badge = self.uow.badges.by_uid(uid)
        return None if badge is None else badge.status

    def prepaid_categories(self) -> frozenset[str]:
        return frozenset(self.uow.billing.prepaid_rules())

    def member_category(self, member_id: str) -> str | None:
        return self.uow.billing.member_categories({member_id}).get(member_id)


_INDEXES: weakref.WeakSet[AccessIndex] = weakref.WeakSet()
_INDEXES_GUARD = threading.Lock()


class AccessIndex:
    """The facts of online checks kept in memory for this process (see the module doc).

    A value read by a unit of work is stored only if no watched commit happened since
    the unit of work's reader was made (before its first read), so a value read from
    before a commit is never kept past it. It holds at most `max_entries` values (one
    per controller, machine and badge asked about): past that it starts again empty, so
    a controller asking about endless made-up badges cannot make it grow.
    """

    def __init__(
        self,
        *,
        max_age_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._entries: dict[tuple[str, str], tuple[int, float, object]] = {}
        with _INDEXES_GUARD:
            _INDEXES.add(self)

    def reader(self, uow: SqlAlchemyUnitOfWork) -> AccessFacts:
        """The facts for one check; make it before the unit of work reads anything."""
        with self._lock:
            generation = self._generation
        return _IndexedAccess(self, DatabaseAccess(uow), generation)

    def invalidate(self) -> None:
        """Forget everything: the next check reads the database again."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    @property
    def entries(self) -> int:
        """How many facts it holds."""
        with self._lock:
            return len(self._entries)

    def _lookup(
        self, key: tuple[str, str], generation: int, load: Callable[[], T]
    ) -> T:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            fresh = entry is not None and entry[0] == self._generation
            if entry is not None and fresh and now - entry[1] < self.max_age_s:
                return entry[2]  # type: ignore[return-value]
        value = load()
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (generation, now, value)
        return value


class _IndexedAccess:
    def __init__(self, index: AccessIndex, database: DatabaseAccess, generation: int) -> None:
        self._index = index
        self._database = database
        self._generation = generation

    def controller(self, controller_id: str) -> ControllerEntry | None:
        return self._index._lookup(
            ("controller", controller_id),
            self._generation,
            lambda: self._database.controller(controller_id),
        )

    def machine(self, machine_id: str) -> MachineAccess | None:
        return self._index._lookup(
            ("machine", machine_id), self._generation, lambda: self._database.machine(machine_id)
        )

    def badge_status(self, uid: str) -> str | None:
        return self._index._lookup(
            ("badge", uid), self._generation, lambda: self._database.badge_status(uid)
        )

    def prepaid_categories(self) -> frozenset[str]:
        return self._index._lookup(
            ("prepaid", ""), self._generation, self._database.prepaid_categories
        )

    def member_category(self, member_id: str) -> str | None:
        return self._index._lookup(
            ("member_category", member_id),
            self._generation,
            lambda: self._database.member_category(member_id),
        )


# -- watching commits -------------------------------------------------------------------
# Session events of every session in the process: whatever engine or session factory a
# part of the server uses, its writes reach the indexes.

_WROTE_WATCHED = "fablab_access_index_dirty"


def _table(obj: object) -> str | None:
    return getattr(type(obj), "__tablename__", None)


def _changes_facts(obj: object) -> bool:
    """Whether a modified row (the flush's pre-flush history) changes a watched fact."""
    table = _table(obj)
    if table is None:
        return True  # not one of our mapped classes: assume it matters
    if table not in WATCHED:
        return False
    columns = WATCHED[table]
    if columns is None:
        return True
    attrs = inspect(obj).attrs
    return any(attrs[name].history.has_changes() for name in columns if name in attrs)


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _flush_context: Any) -> None:
    added_or_deleted = (*session.new, *session.deleted)
    if any(_table(obj) is None or _table(obj) in WATCHED_TABLES for obj in added_or_deleted) or any(
        _changes_facts(obj) for obj in session.dirty
    ):
        session.info[_WROTE_WATCHED] = True


def _updated_columns(statement: object) -> set[str] | None:
    """The columns an `update(...).values(...)` sets; None when that cannot be told
    (UPDATE by primary key from parameter lists, SQL text, another statement)."""
    values = getattr(statement, "_values", None)  # SQLAlchemy's; absent: assume all
    if not values:
        return None
    names = {getattr(column, "key", None) for column in values}
    return None if None in names else {str(name) for name in names}


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name is not None and name not in WATCHED:
        return
    if name is not None and state.is_update:
        watched, updated = WATCHED[name], _updated_columns(state.statement)
        if watched is not None and updated is not None and not updated & watched:
            return  # e.g. a controller's last_seen_at set in bulk by ingest
    state.session.info[_WROTE_WATCHED] = True  # SQL text too: assume it wrote


@event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    if session.info.pop(_WROTE_WATCHED, False):
        with _INDEXES_GUARD:
            indexes = list(_INDEXES)
        for index in indexes:
            index.invalidate()
