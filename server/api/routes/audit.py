"""The audit log: who changed what, when, before and after (managers and admins)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict

from server.adapters.orm import AuditEntry
from server.adapters.repository import AuditQueries
from server.api.deps import ManagerPrincipal, RuntimeDep, UowDep
from server.api.schemas import Page
from server.bootstrap import ServerRuntime
from server.domain.moments import in_range
from server.service_layer.privacy import audit_entry_dict

router = APIRouter(prefix="/api", tags=["audit"])

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
EXPORT_BATCH = 500
CSV_COLUMNS = ("id", "at", "actor_id", "action", "object_type", "object_id", "before", "after")


class AuditEntryPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": 42,
                "at": "2026-11-22T10:00:00Z",
                "actor_id": "mona",
                "action": "badge.status",
                "object_type": "badge",
                "object_id": "7",
                "before": {"status": "active"},
                "after": {"status": "lost"},
            }
        }
    )

    id: int
    at: datetime
    actor_id: str | None
    action: str
    object_type: str
    object_id: str
    before: Any = None
    after: Any = None


def _iso_only(value: object) -> object:
    """Only ISO 8601 text: pydantic would also read a bare number as a Unix time."""
    if isinstance(value, str) and not _ISO_DATETIME.match(value):
        raise ValueError("use an ISO 8601 date-time with a time zone, e.g. 2026-11-22T10:00:00Z")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


@dataclass(frozen=True)
class AuditFilters:
    """Filters shared by the list and the export; every one is optional."""

    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query_args(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "since": self.since,
            "until": self.until,
        }


def audit_filters(
    actor: Annotated[
        str | None,
        Query(max_length=64, pattern=_PRINTABLE, description="Member id of the actor."),
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=60, pattern=_PRINTABLE, description="e.g. training.grant"),
    ] = None,
    object_type: Annotated[
        str | None, Query(max_length=40, pattern=_PRINTABLE, description="e.g. member, badge")
    ] = None,
    object_id: Annotated[str | None, Query(max_length=100, pattern=_PRINTABLE)] = None,
    since: Annotated[IsoDateTime | None, Query(description="From this time (inclusive).")] = None,
    until: Annotated[IsoDateTime | None, Query(description="Before this time.")] = None,
) -> AuditFilters:
    return AuditFilters(
        actor,
        action,
        object_type,
        object_id,
        None if since is None else in_range(since, "since"),
        None if until is None else in_range(until, "until"),
    )


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


def audit_public(entry: AuditEntry) -> AuditEntryPublic:
    return AuditEntryPublic(**audit_entry_dict(entry))


@router.get("/audit", response_model=Page[AuditEntryPublic])
def list_audit(
    uow: UowDep,
    _: ManagerPrincipal,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[AuditEntryPublic]:
    """Audit entries, newest first: grants, revokes, badge and role changes, out-of-service…"""
    rows, total = uow.audit.page(**filters.query_args(), limit=limit, offset=offset)
    return Page(items=[audit_public(e) for e in rows], total=total, limit=limit, offset=offset)


def _entries(runtime: ServerRuntime, filters: AuditFilters) -> Iterator[AuditEntryPublic]:
    """Every matching entry in id order, read in batches over one transaction."""
    with runtime.new_uow() as uow:
        queries = AuditQueries(uow.session)
        after_id = 0
        while True:
            batch = queries.batch(after_id=after_id, limit=EXPORT_BATCH, **filters.query_args())
            for entry in batch:
                yield audit_public(entry)
            if len(batch) < EXPORT_BATCH:
                return
            after_id = batch[-1].id
            uow.session.expunge_all()


def _csv_rows(entries: Iterator[AuditEntryPublic]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for entry in entries:
        writer.writerow(
            [
                entry.id,
                entry.at.isoformat(),
                entry.actor_id or "",
                entry.action,
                entry.object_type,
                entry.object_id,
                "" if entry.before is None else json.dumps(entry.before, sort_keys=True),
                "" if entry.after is None else json.dumps(entry.after, sort_keys=True),
            ]
        )
        yield flush()


def _json_array(entries: Iterator[AuditEntryPublic]) -> Iterator[str]:
    yield "["
    first = True
    for entry in entries:
        yield ("" if first else ",") + "\n" + entry.model_dump_json()
        first = False
    yield "\n]\n"


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Every matching entry, oldest first, as a file download.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/AuditEntryPublic"},
                    }
                },
            },
        }
    },
)
def export_audit(
    runtime: RuntimeDep,
    _: ManagerPrincipal,
    filters: FiltersDep,
    format_: Annotated[Literal["csv", "json"], Query(alias="format")] = "csv",
) -> StreamingResponse:
    """The whole matching audit log (same filters as the list) as CSV (with a header) or JSON."""
    entries = _entries(runtime, filters)
    if format_ == "csv":
        body, media_type = _csv_rows(entries), "text/csv; charset=utf-8"
    else:
        body, media_type = _json_array(entries), "application/json"
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="audit.{format_}"'},
    )
