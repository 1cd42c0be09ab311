"""Importing members and badges from a CSV file (managers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from server.api.deps import ManagerPrincipal, RuntimeDep
from server.service_layer.imports import MAX_BYTES, ImportReport, import_members

router = APIRouter(prefix="/api", tags=["members"])

CSV_TYPES = frozenset({"text/csv", "text/plain", "application/csv"})
_EXAMPLE_CSV = (
    "name,email,category,badge_uid\n"
    "Ada Lovelace,ada@lab.example,student,04:A1:B2:C3\n"
    "Grace Hopper,,member,\n"
)


class ImportErrorPublic(BaseModel):
    line: int
    error: str


class ImportLinePublic(BaseModel):
    line: int
    status: str
    name: str | None
    member_id: str | None
    badge_id: int | None
    error: str | None


class ImportReportPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "dry_run": False,
                "imported": 1,
                "valid": 1,
                "errors": [{"line": 3, "error": "not an email address: 'grace@'"}],
                "lines": [
                    {
                        "line": 2,
                        "status": "imported",
                        "name": "Ada Lovelace",
                        "member_id": "5b0c…",
                        "badge_id": 12,
                        "error": None,
                    },
                    {
                        "line": 3,
                        "status": "error",
                        "name": "Grace Hopper",
                        "member_id": None,
                        "badge_id": None,
                        "error": "not an email address: 'grace@'",
                    },
                ],
            }
        }
    )

    dry_run: bool
    imported: int
    valid: int
    errors: list[ImportErrorPublic]
    lines: list[ImportLinePublic]


async def _read_body(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the file as the request body with 'Content-Type: text/csv'",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the file is larger than 2 MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the file is larger than 2 MB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/members/import",
    response_model=ImportReportPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "maxLength": MAX_BYTES},
                    "example": _EXAMPLE_CSV,
                }
            },
        }
    },
    responses={
        400: {"description": "Unreadable file: not UTF-8, no header, unknown columns…"},
        413: {"description": "The file is larger than 2 MB"},
        415: {"description": "The body is not sent as text/csv"},
    },
)
async def import_members_csv(
    request: Request,
    runtime: RuntimeDep,
    principal: ManagerPrincipal,
    dry_run: Annotated[bool, Query(description="Only check the lines, import nothing.")] = False,
) -> ImportReportPublic:
    """Import members from CSV: a header `name,email,category,badge_uid` (name required, the
    others optional, any order; `,` or `;`), then one member per line. Each line is imported
    on its own; the answer reports every line, with the errors of those that were not."""
    data = await _read_body(request)
    report: ImportReport = await run_in_threadpool(
        import_members, runtime.bus, data, principal, dry_run=dry_run
    )
    return ImportReportPublic.model_validate(report.as_dict())
