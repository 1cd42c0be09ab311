"""Usage sessions, refused taps and ingest statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import RuntimeDep, UowDep
from server.api.schemas import DenialPublic, IngestStatsPublic, Page, SessionPublic

router = APIRouter(prefix="/api", tags=["sessions"])

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, description="items to skip")]


@router.get("/sessions", response_model=Page[SessionPublic])
def list_sessions(
    uow: UowDep,
    machine: Annotated[str | None, Query(max_length=63)] = None,
    member: Annotated[str | None, Query(max_length=64)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[SessionPublic]:
    """Sessions, newest first, filtered by machine, member or still open."""
    rows, total = uow.sessions.page(
        machine_id=machine, member_id=member, open_only=open_only, limit=limit, offset=offset
    )
    names = uow.members.names({s.member_id for s in rows if s.member_id})
    items = [
        SessionPublic(
            id=s.id,
            machine_id=s.machine_id,
            member_id=s.member_id,
            member_name=names.get(s.member_id) if s.member_id else None,
            level=s.level,
            started_at=s.started_at,
            ended_at=s.ended_at,
            end_reason=s.end_reason,
            elapsed_seconds=s.elapsed_seconds,
            busy_seconds=s.busy_seconds,
            stale_snapshot=s.stale_snapshot,
        )
        for s in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/denials", response_model=Page[DenialPublic])
def list_denials(
    uow: UowDep,
    machine: Annotated[str | None, Query(max_length=63)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DenialPublic]:
    """Refused badge taps, newest first."""
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
def ingest_stats(runtime: RuntimeDep, uow: UowDep) -> IngestStatsPublic:
    """Counters of the ingest worker since start, and stored events by status."""
    return IngestStatsPublic(
        counters=dict(runtime.ingest.stats), stored_events=uow.events.count_by_status()
    )
