"""Machines and their live state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from server.adapters.orm import Machine, UsageSession, utcnow
from server.api.deps import ManagerPrincipal, OptionalPrincipal, RuntimeDep, UowDep
from server.api.schemas import (
    CommandPublic,
    ControllerCredentialsPublic,
    ControllerPublic,
    CurrentSession,
    EnrollmentCreate,
    EnrollmentPublic,
    LockPublic,
    LockRequest,
    MachineCreate,
    MachinePublic,
    MachineSettingsPublic,
    MachineUpdate,
    OutOfServiceRequest,
    RowId,
)
from server.bootstrap import ServerRuntime
from server.domain.access import Principal
from server.domain.floor import controller_online, machine_state
from server.service_layer import commands as cmds
from server.service_layer.floor_view import FloorMachine, FloorReading
from server.service_layer.machines import ControllerCredentials
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api/machines", tags=["machines"])

MachineId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such machine"}}


def _public(
    uow: SqlAlchemyUnitOfWork,
    machine: Machine,
    open_session: UsageSession | None,
    viewer: Principal | None = None,
    missed_heartbeats: int = 3,
) -> MachinePublic:
    controller = machine.controller
    current = None
    if open_session is not None:
        # Who is working is shown to logged-in members only, not on the anonymous floor.
        member = None
        if viewer is not None and open_session.member_id:
            member = uow.members.get(open_session.member_id)
        current = CurrentSession(
            id=open_session.id,
            member_id=open_session.member_id if viewer else None,
            member_name=member.name if member else None,
            started_at=open_session.started_at,
            busy=open_session.busy,
        )
    return MachinePublic(
        id=machine.id,
        name=machine.name,
        site=machine.site,
        mode=machine.mode,
        state=machine_state(
            controller_online=controller is not None
            and controller_online(
                status=controller.state,
                last_seen_at=controller.last_seen_at,
                heartbeat_interval_s=machine.heartbeat_interval_s,
                now=utcnow(),
                missed_heartbeats=missed_heartbeats,
            ),
            out_of_service=machine.out_of_service,
            in_use=open_session is not None,
        ),
        out_of_service=machine.out_of_service,
        out_of_service_reason=machine.out_of_service_reason,
        snapshot_version=machine.snapshot_version,
        settings=MachineSettingsPublic(
            idle_timeout_s=machine.idle_timeout_s,
            max_duration_s=machine.max_duration_s,
            heartbeat_interval_s=machine.heartbeat_interval_s,
            warning_s=machine.warning_s,
            card_removal_grace_s=machine.card_removal_grace_s,
            supervisor_window_s=machine.supervisor_window_s,
        ),
        controller=ControllerPublic(
            id=controller.id,
            state=controller.state,
            firmware_version=controller.firmware_version,
            last_seen_at=controller.last_seen_at,
        )
        if controller
        else None,
        current_session=current,
    )


def _from_floor(machine: FloorMachine, viewer: Principal | None) -> MachinePublic:
    controller, session = machine.controller, machine.current_session
    current = None
    if session is not None:
        # Who is working is shown to logged-in members only, not on the anonymous floor.
        current = CurrentSession(
            id=session.id,
            member_id=session.member_id if viewer else None,
            member_name=session.member_name if viewer else None,
            started_at=session.started_at,
            busy=session.busy,
        )
    return MachinePublic(
        id=machine.id, name=machine.name, site=machine.site, mode=machine.mode,
        state=machine.state, out_of_service=machine.out_of_service,
        out_of_service_reason=machine.out_of_service_reason,
        snapshot_version=machine.snapshot_version,
        settings=MachineSettingsPublic(
            idle_timeout_s=machine.idle_timeout_s, max_duration_s=machine.max_duration_s,
            heartbeat_interval_s=machine.heartbeat_interval_s, warning_s=machine.warning_s,
            card_removal_grace_s=machine.card_removal_grace_s,
            supervisor_window_s=machine.supervisor_window_s,
        ),
        controller=ControllerPublic(
            id=controller.id, state=controller.state,
            firmware_version=controller.firmware_version, last_seen_at=controller.last_seen_at,
        ) if controller else None,
        current_session=current,
    )  # fmt: skip


def machines_public(reading: FloorReading, viewer: Principal | None) -> list[MachinePublic]:
    """Every machine of the floor reading, as `viewer` may see it."""
    return [_from_floor(machine, viewer) for machine in reading.machines]


_MACHINE_LIST = TypeAdapter(list[MachinePublic])


def _encoded(reading: FloorReading, viewer: Principal | None) -> bytes:
    """The list's JSON, built once per reading and kind of viewer."""
    key = "api:member" if viewer is not None else "api:anonymous"
    body = reading.renders.get(key)
    if body is None:
        body = _MACHINE_LIST.dump_json(machines_public(reading, viewer))
        reading.renders[key] = body
    return body


async def current_floor(runtime: ServerRuntime) -> FloorReading:
    """The live floor, from the runtime's cache; read in a worker thread when stale, by
    one request at a time (the others wait in the event loop, not in worker threads)."""
    reading = runtime.floor.fresh()
    if reading is not None:
        return reading
    async with runtime.floor_readers.semaphore():
        reading = runtime.floor.fresh()
        if reading is None:
            reading = await run_in_threadpool(runtime.floor.read)
    return reading


@router.get("", response_model=list[MachinePublic])
async def list_machines(viewer: OptionalPrincipal, runtime: RuntimeDep) -> Response:
    """Every machine with its live state: free, in use (by whom, since when), offline.

    Anonymous callers (the floor screen, open data) see states but not who is working.
    The floor is read once for all callers until a change (served from memory).
    """
    reading = await current_floor(runtime)
    return Response(_encoded(reading, viewer), media_type="application/json")


def _machine(uow: SqlAlchemyUnitOfWork, machine_id: str) -> Machine:
    machine = uow.machines.get(machine_id)
    if machine is None:
        raise HTTPException(status_code=404, detail=f"no machine {machine_id}")
    return machine


def _machine_public(
    uow: SqlAlchemyUnitOfWork,
    runtime: ServerRuntime,
    machine_id: str,
    viewer: Principal | None,
) -> MachinePublic:
    """One machine's live state, read afresh (after a change the request just made)."""
    uow.session.expire_all()
    missed = runtime.settings.controller_offline_after_missed_heartbeats
    machine = _machine(uow, machine_id)
    return _public(uow, machine, uow.sessions.latest_open(machine_id), viewer, missed)


@router.get("/{machine_id}", response_model=MachinePublic, responses=NOT_FOUND)
def get_machine(
    machine_id: MachineId, uow: UowDep, viewer: OptionalPrincipal, runtime: RuntimeDep
) -> MachinePublic:
    return _machine_public(uow, runtime, machine_id, viewer)


@router.post(
    "",
    response_model=MachinePublic,
    status_code=201,
    responses={409: {"description": "Machine or training type exists"}},
)
def create_machine(
    body: MachineCreate, runtime: RuntimeDep, uow: UowDep, principal: ManagerPrincipal
) -> MachinePublic:
    """Add a machine and its controller (then issue the controller's credentials).

    Without `training_type_ids`, a training type of the same id and name is created.
    """
    runtime.bus.handle(
        cmds.AddMachine(
            body.id,
            body.name,
            runtime.settings.site,
            mode=body.mode,
            idle_timeout_s=body.idle_timeout_s,
            max_duration_s=body.max_duration_s,
            heartbeat_interval_s=body.heartbeat_interval_s,
            warning_s=body.warning_s,
            card_removal_grace_s=body.card_removal_grace_s,
            supervisor_window_s=body.supervisor_window_s,
            training_type_ids=tuple(body.training_type_ids),
            actor=principal,
        )
    )
    return _machine_public(uow, runtime, body.id, principal)


@router.patch("/{machine_id}", response_model=MachinePublic, responses=NOT_FOUND)
def update_machine(
    machine_id: MachineId,
    body: MachineUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> MachinePublic:
    """Change settings; the controller gets them in its next signed config."""
    runtime.bus.handle(
        cmds.UpdateMachine(
            machine_id,
            name=body.name,
            mode=body.mode,
            idle_timeout_s=body.idle_timeout_s,
            max_duration_s=body.max_duration_s,
            heartbeat_interval_s=body.heartbeat_interval_s,
            warning_s=body.warning_s,
            card_removal_grace_s=body.card_removal_grace_s,
            supervisor_window_s=body.supervisor_window_s,
            actor=principal,
        )
    )
    return _machine_public(uow, runtime, machine_id, principal)


@router.post("/{machine_id}/out-of-service", response_model=MachinePublic, responses=NOT_FOUND)
def out_of_service(
    machine_id: MachineId,
    body: OutOfServiceRequest,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> MachinePublic:
    """Refuse every badge on the machine (a manager may still override at the machine)."""
    runtime.bus.handle(cmds.SetOutOfService(machine_id, True, body.reason, actor=principal))
    return _machine_public(uow, runtime, machine_id, principal)


@router.post("/{machine_id}/back-in-service", response_model=MachinePublic, responses=NOT_FOUND)
def back_in_service(
    machine_id: MachineId, runtime: RuntimeDep, uow: UowDep, principal: ManagerPrincipal
) -> MachinePublic:
    runtime.bus.handle(cmds.SetOutOfService(machine_id, False, actor=principal))
    return _machine_public(uow, runtime, machine_id, principal)


@router.post("/{machine_id}/lock", response_model=LockPublic, responses=NOT_FOUND)
def lock(
    machine_id: MachineId, body: LockRequest, runtime: RuntimeDep, principal: ManagerPrincipal
) -> LockPublic:
    """End the session running on the machine now (relay off); badges work again after."""
    command_id = runtime.bus.handle(cmds.LockMachine(machine_id, body.reason, actor=principal))
    return LockPublic(command_id=command_id)


@router.get("/{machine_id}/commands", response_model=list[CommandPublic], responses=NOT_FOUND)
def list_commands(machine_id: MachineId, uow: UowDep, _: ManagerPrincipal) -> list[CommandPublic]:
    """The latest commands sent to the machine's controller: pending, applied or expired."""
    _machine(uow, machine_id)
    now = utcnow()
    return [
        CommandPublic(
            id=c.id,
            kind=c.kind,
            reason=c.reason,
            issued_at=c.issued_at,
            expires_at=c.expires_at,
            sent_count=c.sent_count,
            status="applied" if c.applied_at else "expired" if c.expires_at <= now else "pending",
            applied_at=c.applied_at,
            applied_message=c.applied_message,
        )
        for c in uow.commands.of_machine(machine_id)
    ]


@router.post(
    "/{machine_id}/controller/credentials",
    response_model=ControllerCredentialsPublic,
    responses=NOT_FOUND,
)
def issue_credentials(
    machine_id: MachineId, runtime: RuntimeDep, principal: ManagerPrincipal
) -> ControllerCredentialsPublic:
    """New MQTT login and snapshot key for the controller, shown once; old ones stop working."""
    issued: ControllerCredentials = runtime.bus.handle(
        cmds.IssueControllerCredentials(machine_id, actor=principal)
    )
    return ControllerCredentialsPublic(
        controller_id=issued.controller_id,
        mqtt_username=issued.mqtt_username,
        mqtt_password=issued.mqtt_password,
        key_hex=issued.key_hex,
    )


@router.post(
    "/{machine_id}/enroll", response_model=EnrollmentPublic, status_code=201, responses=NOT_FOUND
)
def enroll(
    machine_id: MachineId,
    body: EnrollmentCreate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: ManagerPrincipal,
) -> EnrollmentPublic:
    """The next unknown badge tapped on this machine within the window goes to the member."""
    enrollment_id = runtime.bus.handle(
        cmds.StartEnrollment(machine_id, body.member_id, body.window_s, actor=principal)
    )
    return enrollment_public(uow, enrollment_id)


@router.get(
    "/{machine_id}/enroll/{enrollment_id}",
    response_model=EnrollmentPublic,
    responses={404: {"description": "No such enrollment"}},
)
def get_enrollment(
    machine_id: MachineId, enrollment_id: RowId, uow: UowDep, _: ManagerPrincipal
) -> EnrollmentPublic:
    """Poll an enrollment: `badge_uid` is set once the badge was tapped."""
    found = uow.enrollments.get(enrollment_id)
    if found is None or found.machine_id != machine_id:
        raise HTTPException(status_code=404, detail=f"no enrollment {enrollment_id}")
    return enrollment_public(uow, enrollment_id)


def enrollment_public(uow: SqlAlchemyUnitOfWork, enrollment_id: int) -> EnrollmentPublic:
    found = uow.enrollments.get(enrollment_id)
    assert found is not None
    return EnrollmentPublic(
        id=found.id,
        machine_id=found.machine_id,
        member_id=found.member_id,
        expires_at=found.expires_at,
        badge_uid=found.badge_uid,
        completed_at=found.completed_at,
    )
