"""Machines and their live state."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from server.adapters.orm import Machine, UsageSession
from server.api.deps import UowDep
from server.api.schemas import ControllerPublic, CurrentSession, MachinePublic
from server.domain.floor import machine_state
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api/machines", tags=["machines"])


def _public(
    uow: SqlAlchemyUnitOfWork, machine: Machine, open_session: UsageSession | None
) -> MachinePublic:
    controller = machine.controller
    current = None
    if open_session is not None:
        member = uow.members.get(open_session.member_id) if open_session.member_id else None
        current = CurrentSession(
            id=open_session.id,
            member_id=open_session.member_id,
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
            controller_online=controller is not None and controller.state == "online",
            out_of_service=machine.out_of_service,
            in_use=open_session is not None,
        ),
        out_of_service=machine.out_of_service,
        out_of_service_reason=machine.out_of_service_reason,
        snapshot_version=machine.snapshot_version,
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


def _open_by_machine(uow: SqlAlchemyUnitOfWork) -> dict[str, UsageSession]:
    latest: dict[str, UsageSession] = {}
    for usage in uow.sessions.open_sessions():
        held = latest.get(usage.machine_id)
        if held is None or usage.started_at > held.started_at:
            latest[usage.machine_id] = usage
    return latest


@router.get("", response_model=list[MachinePublic])
def list_machines(uow: UowDep) -> list[MachinePublic]:
    """Every machine with its live state: free, in use (by whom, since when), offline."""
    open_sessions = _open_by_machine(uow)
    return [_public(uow, m, open_sessions.get(m.id)) for m in uow.machines.all()]


@router.get(
    "/{machine_id}",
    response_model=MachinePublic,
    responses={404: {"description": "No such machine"}},
)
def get_machine(machine_id: str, uow: UowDep) -> MachinePublic:
    machine = uow.machines.get(machine_id)
    if machine is None:
        raise HTTPException(status_code=404, detail=f"no machine {machine_id}")
    return _public(uow, machine, _open_by_machine(uow).get(machine_id))
