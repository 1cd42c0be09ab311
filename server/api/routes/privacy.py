"""Personal data (GDPR): download one's data, erase a member."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict

from server.adapters.orm import utcnow
from server.api.deps import CurrentPrincipal, ManagerPrincipal, RuntimeDep, UowDep
from server.api.routes.audit import AuditEntryPublic
from server.service_layer import commands as cmds
from server.service_layer.privacy import ErasureResult, export_member

router = APIRouter(prefix="/api", tags=["privacy"])

MemberId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such member, or already erased"}
}


class ExportedMember(BaseModel):
    id: str
    name: str
    email: str | None
    category: str
    category_name: str | None
    active: bool
    created_at: datetime
    roles: list[str]
    trainer_of: list[str]
    has_password: bool


class ExportedBadge(BaseModel):
    id: int
    uid: str
    status: str
    created_at: datetime


class ExportedTraining(BaseModel):
    id: int
    training_type_id: str
    level: str
    granted_by: str | None
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


class ExportedSession(BaseModel):
    id: str
    machine_id: str
    badge_uid: str | None
    level: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    elapsed_seconds: float
    busy_seconds: float
    stale_snapshot: bool


class ExportedDenial(BaseModel):
    id: int
    machine_id: str
    badge_uid: str
    reason: str
    at: datetime


class ExportedEnrollment(BaseModel):
    id: int
    machine_id: str
    requested_by: str | None
    created_at: datetime
    expires_at: datetime
    badge_uid: str | None
    completed_at: datetime | None


class ExportedApiToken(BaseModel):
    """Token metadata only: the secret is never stored, so never exported."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


# The same shape as the audit log API's entries.
ExportedAuditEntry = AuditEntryPublic


class MemberDataExport(BaseModel):
    """Everything the lab keeps about one member."""

    exported_at: datetime
    member: ExportedMember
    badges: list[ExportedBadge]
    trainings: list[ExportedTraining]
    sessions: list[ExportedSession]
    denials: list[ExportedDenial]
    enrollments: list[ExportedEnrollment]
    api_tokens: list[ExportedApiToken]
    audit: list[ExportedAuditEntry]


class ErasurePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "member_id": "3f2a…",
                "name": "Erased member 1c9e05d2",
                "erased_at": "2026-11-22T10:00:00Z",
                "badges_erased": 2,
                "machines_republished": ["laser"],
            }
        }
    )

    member_id: str
    name: str
    erased_at: datetime
    badges_erased: int
    machines_republished: list[str]


def _export(uow: UowDep, member_id: str, response: Response) -> MemberDataExport:
    data = export_member(uow, member_id, utcnow())
    response.headers["Content-Disposition"] = f'attachment; filename="fablab-data-{member_id}.json"'
    return MemberDataExport.model_validate(data)


@router.get("/me/export", response_model=MemberDataExport)
def export_my_data(
    uow: UowDep, principal: CurrentPrincipal, response: Response
) -> MemberDataExport:
    """Download all my data as JSON: profile, badges, trainings, sessions, refused taps,
    API tokens (without secrets) and the audit entries about me or made by me."""
    return _export(uow, principal.member_id, response)


@router.get("/members/{member_id}/export", response_model=MemberDataExport, responses=NOT_FOUND)
def export_member_data(
    member_id: MemberId, uow: UowDep, _: ManagerPrincipal, response: Response
) -> MemberDataExport:
    """A member's data as JSON (managers; to answer a request made without a login)."""
    return _export(uow, member_id, response)


@router.post(
    "/members/{member_id}/erase",
    response_model=ErasurePublic,
    responses={
        **NOT_FOUND,
        400: {"description": "You cannot erase yourself"},
        403: {"description": "Not a manager, or the member holds a role and you are no admin"},
    },
)
def erase_member(
    member_id: MemberId, runtime: RuntimeDep, principal: ManagerPrincipal
) -> ErasurePublic:
    """Erase a member (GDPR): name, email, password and badge UIDs are removed for good,
    logins and tokens end, badges stop working. Sessions, trainings and the audit log are
    kept under the member's id, as accounting requires. Cannot be undone."""
    result: ErasureResult = runtime.bus.handle(cmds.EraseMember(member_id, actor=principal))
    return ErasurePublic(
        member_id=result.member_id,
        name=result.name,
        erased_at=result.erased_at,
        badges_erased=result.badges_erased,
        machines_republished=list(result.machines_republished),
    )
