"""Usage sessions, refused taps, controller faults, seq conflicts and ingest statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from server.adapters.orm import UsageSession
from server.api.deps import ManagerPrincipal, OptionalPrincipal, RuntimeDep, UowDep
from server.api.schemas import (
    ConflictPublic,
    DenialPublic,
    FaultPublic,
    IngestStatsPublic,
    Page,
    SessionPublic,
)
from server.domain.access import Principal, Role
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api", tags=["sessions"])

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]
SlugQuery = Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
MemberQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _sees_all(viewer: Principal | None) -> bool:
    return viewer is not None and (viewer.is_manager or viewer.has(Role.TREASURER))


def _visible_scope(
    uow: SqlAlchemyUnitOfWork, viewer: Principal | None
) -> tuple[str, set[str]] | None:
    """None: everything. Otherwise (own member id, machines of the types they train)."""
    if viewer is None or _sees_all(viewer):
        return None
    machines: set[str] = set()
    for type_id in viewer.trainer_of:
        found = uow.training_types.get(type_id)
        if found is not None:
            machines |= {m.id for m in found.machines}
    return viewer.member_id, machines


def _public(s: UsageSession, names: dict[str, str], identified: bool) -> SessionPublic:
    return SessionPublic(
        id=s.id,
        machine_id=s.machine_id,
        member_id=s.member_id if identified else None,
        member_name=names.get(s.member_id) if identified and s.member_id else None,
        level=s.level,
        started_at=s.started_at,
        ended_at=s.ended_at,
        end_reason=s.end_reason,
        elapsed_seconds=s.elapsed_seconds,
        busy_seconds=s.busy_seconds,
        stale_snapshot=s.stale_snapshot,
    )


@router.get("/sessions", response_model=Page[SessionPublic])
def list_sessions(
    uow: UowDep,
    viewer: OptionalPrincipal,
    machine: SlugQuery = None,
    member: MemberQuery = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[SessionPublic]:
    """Sessions, newest first, filtered by machine, member or still open.

    Without login: every session, anonymised (the lab's open utilisation data).
    A maker sees their own; a trainer also those on the machines they train on;
    managers and treasurers see all.
    """
    if viewer is None and member is not None:
        raise HTTPException(status_code=401, detail="log in to filter by member")
    rows, total = uow.sessions.page(
        machine_id=machine,
        member_id=member,
        open_only=open_only,
        visible_to=_visible_scope(uow, viewer),
        limit=limit,
        offset=offset,
    )
    names = uow.members.names({s.member_id for s in rows if s.member_id}) if viewer else {}
    items = [_public(s, names, viewer is not None) for s in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionPublic,
    responses={404: {"description": "No such session (or not yours to see)"}},
)
def get_session(
    session_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    uow: UowDep,
    viewer: OptionalPrincipal,
) -> SessionPublic:
    usage = uow.sessions.get(session_id)
    scope = _visible_scope(uow, viewer)
    hidden = (
        scope is not None
        and usage is not None
        and (usage.member_id != scope[0] and usage.machine_id not in scope[1])
    )
    if usage is None or hidden:
        raise HTTPException(status_code=404, detail=f"no session {session_id}")
    names = uow.members.names({usage.member_id}) if viewer and usage.member_id else {}
    return _public(usage, names, viewer is not None)


@router.get("/denials", response_model=Page[DenialPublic])
def list_denials(
    uow: UowDep,
    _: ManagerPrincipal,
    machine: SlugQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DenialPublic]:
    """Refused badge taps, newest first (an unknown badge here can be enrolled)."""
    rows, total = uow.denials.page(machine_id=machine, limit=limit, offset=offset)
    items = [
        DenialPublic(
            id=d.id,
            machine_id=d.machine_id,
            badge_uid=d.badge_uid,
            member_id=d.member_id,
            reason=d.reason,
            at=d.at,
        )
        for d in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/ingest/stats", response_model=IngestStatsPublic)
def ingest_stats(runtime: RuntimeDep, uow: UowDep, _: ManagerPrincipal) -> IngestStatsPublic:
    """Counters of the ingest worker since start, and stored events by status."""
    return IngestStatsPublic(
        counters=dict(runtime.ingest.stats + runtime.auth_worker.stats),
        stored_events=uow.events.count_by_status(),
        faults=uow.faults.count_by_code(),
    )


CodeQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.get("/faults", response_model=Page[FaultPublic])
def list_faults(
    uow: UowDep,
    _: ManagerPrincipal,
    machine: SlugQuery = None,
    code: CodeQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[FaultPublic]:
    """Faults reported by controllers (reader failure, outbox full, corrupt snapshot or
    outbox file, watchdog near miss…), newest first, by machine and code."""
    rows, total = uow.faults.page(machine_id=machine, code=code, limit=limit, offset=offset)
    items = [
        FaultPublic(
            id=f.id,
            machine_id=f.machine_id,
            controller_id=f.controller_id,
            code=f.code,
            message=f.message,
            at=f.at,
            received_at=f.received_at,
        )
        for f in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/ingest/conflicts", response_model=Page[ConflictPublic])
def list_conflicts(
    uow: UowDep, _: ManagerPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[ConflictPublic]:
    """Events that claimed a seq their stream already holds under another event id (an
    outbox restored from a backup, or another publisher): never acknowledged, kept here
    with the event that holds the seq, newest first."""
    rows, total = uow.events.conflicts_page(limit=limit, offset=offset)
    items = [
        ConflictPublic(
            id=raw.id,
            machine_id=machine_id,
            controller_id=raw.controller_id,
            outbox_id=raw.outbox_id,
            seq=raw.conflict_seq,
            event_id=raw.payload_event_id,
            held_event_id=(held.event_id or held.payload_event_id) if held else None,
            kind=raw.kind,
            error=raw.error,
            payload=raw.payload,
            received_at=raw.received_at,
        )
        for raw, held, machine_id in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)
