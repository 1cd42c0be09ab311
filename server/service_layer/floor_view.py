"""The live floor as a read model: read once, shared by every request until it changes.

Every handled command invalidates it (the message bus calls `FloorView.invalidate`), so
in this process a change is visible to the next reader. Another server process's
changes are seen once the reading is `max_age_s` old. A reading also ends when a
controller's silence would turn it offline (`valid_until`), so a state never outlives
what it was computed from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from server.adapters.orm import Machine, UsageSession
from server.domain.floor import MachineState, controller_online, machine_state
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FloorController:
    id: str
    state: str
    firmware_version: str | None
    last_seen_at: datetime | None
    online: bool


@dataclass(frozen=True)
class FloorSession:
    id: str
    member_id: str | None
    member_name: str | None
    started_at: datetime
    busy: bool


@dataclass(frozen=True)
class FloorMachine:
    """One machine's tile: its settings, controller and running session."""

    id: str
    name: str
    site: str
    mode: str
    state: MachineState
    out_of_service: bool
    out_of_service_reason: str | None
    snapshot_version: int
    idle_timeout_s: int
    max_duration_s: int
    heartbeat_interval_s: int
    warning_s: int
    card_removal_grace_s: int
    supervisor_window_s: int
    controller: FloorController | None
    current_session: FloorSession | None


@dataclass
class FloorReading:
    """The floor as read at `read_at`; `renders` keeps encodings of it (for example the
    API's JSON, per kind of viewer) so that each is built once per reading."""

    machines: tuple[FloorMachine, ...]
    read_at: datetime
    valid_until: datetime | None
    generation: int
    taken_at: float
    renders: dict[str, bytes] = field(default_factory=dict)

    @property
    def controllers_online(self) -> int:
        return sum(1 for m in self.machines if m.controller is not None and m.controller.online)


class FloorView:
    """The current `FloorReading`; `read()` reloads it when it is stale, one reader at a
    time (the others wait and share the result)."""

    def __init__(
        self,
        uow_factory: Callable[[], SqlAlchemyUnitOfWork],
        *,
        max_age_s: float = 2.0,
        missed_heartbeats: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow_factory = uow_factory
        self._max_age_s = max_age_s
        self._missed = missed_heartbeats
        self._clock = clock
        self._generation = 0
        self._generation_lock = threading.Lock()
        self._reading: FloorReading | None = None
        self._load_lock = threading.Lock()

    def invalidate(self, _cmd: object = None) -> None:
        """The floor may have changed: the next reader reloads it (a bus listener, called
        after the command's commit, from any thread)."""
        with self._generation_lock:  # no increment lost to a concurrent one
            self._generation += 1

    def fresh(self) -> FloorReading | None:
        """The current reading if it is still valid, else None; never touches the database."""
        reading = self._reading
        if reading is None or reading.generation != self._generation:
            return None
        if self._clock() - reading.taken_at > self._max_age_s:
            return None
        if reading.valid_until is not None and datetime.now(UTC) >= reading.valid_until:
            return None
        return reading

    def read(self) -> FloorReading:
        """A valid reading, reloaded from the database if needed (blocking)."""
        reading = self.fresh()
        if reading is not None:
            return reading
        with self._load_lock:
            reading = self.fresh()
            if reading is None:
                reading = self._load()
                self._reading = reading
        return reading

    def _load(self) -> FloorReading:
        generation = self._generation
        taken_at = self._clock()
        with self._uow_factory() as uow:
            now = datetime.now(UTC)
            open_sessions = _latest_open_by_machine(uow)
            machines = tuple(
                self._machine(uow, machine, open_sessions.get(machine.id), now)
                for machine in uow.machines.all_with_controllers()
            )
        return FloorReading(
            machines=machines,
            read_at=now,
            valid_until=self._valid_until(machines),
            generation=generation,
            taken_at=taken_at,
        )

    def _machine(
        self,
        uow: SqlAlchemyUnitOfWork,
        machine: Machine,
        usage: UsageSession | None,
        now: datetime,
    ) -> FloorMachine:
        controller = self._controller(machine, now)
        session = _session(uow, usage) if usage is not None else None
        return FloorMachine(
            id=machine.id, name=machine.name, site=machine.site, mode=machine.mode,
            state=machine_state(
                controller_online=controller is not None and controller.online,
                out_of_service=machine.out_of_service, in_use=session is not None,
            ),
            out_of_service=machine.out_of_service,
            out_of_service_reason=machine.out_of_service_reason,
            snapshot_version=machine.snapshot_version,
            idle_timeout_s=machine.idle_timeout_s, max_duration_s=machine.max_duration_s,
            heartbeat_interval_s=machine.heartbeat_interval_s, warning_s=machine.warning_s,
            card_removal_grace_s=machine.card_removal_grace_s,
            supervisor_window_s=machine.supervisor_window_s,
            controller=controller, current_session=session,
        )  # fmt: skip

    def _controller(self, machine: Machine, now: datetime) -> FloorController | None:
        found = machine.controller
        if found is None:
            return None
        online = controller_online(
            status=found.state, last_seen_at=found.last_seen_at,
            heartbeat_interval_s=machine.heartbeat_interval_s, now=now,
            missed_heartbeats=self._missed,
        )  # fmt: skip
        return FloorController(
            found.id, found.state, found.firmware_version, found.last_seen_at, online
        )

    def _valid_until(self, machines: tuple[FloorMachine, ...]) -> datetime | None:
        """When the first online controller would turn offline by silence alone."""
        ends = [
            m.controller.last_seen_at
            + timedelta(seconds=self._missed * m.heartbeat_interval_s)
            for m in machines
            if m.controller is not None
            and m.controller.online
            and m.controller.last_seen_at is not None
        ]
        return min(ends) if ends else None


def _latest_open_by_machine(uow: SqlAlchemyUnitOfWork) -> dict[str, UsageSession]:
    latest: dict[str, UsageSession] = {}
    for usage in uow.sessions.open_sessions():
        held = latest.get(usage.machine_id)
        if held is None or usage.started_at > held.started_at:
            latest[usage.machine_id] = usage
    return latest


def _session(uow: SqlAlchemyUnitOfWork, usage: UsageSession) -> FloorSession:
    member = uow.members.get(usage.member_id) if usage.member_id else None
    return FloorSession(
        id=usage.id,
        member_id=usage.member_id,
        member_name=member.name if member else None,
        started_at=usage.started_at,
        busy=usage.busy,
    )
