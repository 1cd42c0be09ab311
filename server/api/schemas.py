"""Request and response schemas of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from fastapi import Path as PathParam
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from protocol import Level, Mode
from server.domain.floor import MachineState

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ControllerPublic(BaseModel):
    id: str
    state: str
    firmware_version: str | None
    last_seen_at: datetime | None


class CurrentSession(BaseModel):
    id: str
    member_id: str | None
    member_name: str | None
    started_at: datetime
    busy: bool


class MachineSettingsPublic(BaseModel):
    idle_timeout_s: int
    max_duration_s: int
    heartbeat_interval_s: int
    warning_s: int
    card_removal_grace_s: int
    supervisor_window_s: int


class MachinePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "laser",
                "name": "Laser cutter",
                "site": "lab",
                "mode": "toggle",
                "state": "in_use",
                "out_of_service": False,
                "out_of_service_reason": None,
                "snapshot_version": 1763800000,
                "controller": {
                    "id": "laser",
                    "state": "online",
                    "firmware_version": "0.1.0",
                    "last_seen_at": "2026-11-22T10:00:00Z",
                },
                "current_session": {
                    "id": "6f1c…",
                    "member_id": "m-ada",
                    "member_name": "Ada Lovelace",
                    "started_at": "2026-11-22T09:41:00Z",
                    "busy": True,
                },
            }
        }
    )

    id: str
    name: str
    site: str
    mode: str
    state: MachineState
    out_of_service: bool
    out_of_service_reason: str | None
    snapshot_version: int
    settings: MachineSettingsPublic
    controller: ControllerPublic | None
    current_session: CurrentSession | None


class SessionPublic(BaseModel):
    id: str
    machine_id: str
    member_id: str | None
    member_name: str | None
    level: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    elapsed_seconds: float
    busy_seconds: float
    stale_snapshot: bool


class DenialPublic(BaseModel):
    id: int
    machine_id: str
    badge_uid: str
    member_id: str | None
    reason: str
    at: datetime


class IngestStatsPublic(BaseModel):
    counters: dict[str, int]
    stored_events: dict[str, int]
    # Faults reported by controllers, by code (all stored, not only since start).
    faults: dict[str, int] = Field(default_factory=dict)


class FaultPublic(BaseModel):
    """A fault a controller reported: reader failure, outbox full, corrupt file…"""

    id: int
    machine_id: str
    controller_id: str
    code: str
    message: str
    at: datetime
    received_at: datetime


class ConflictPublic(BaseModel):
    """An event that claimed a seq its stream already holds under another event id."""

    id: int
    machine_id: str | None
    controller_id: str | None
    outbox_id: str | None
    seq: int | None
    event_id: str | None
    held_event_id: str | None
    kind: str | None
    error: str | None
    payload: str
    received_at: datetime


# -- shared field types ------------------------------------------------------------------

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"

# Explicit ranges, not \s: Python and JSON Schema (ECMA) regexes disagree on what \s is.
# Unicode white space (what strip_whitespace removes) besides the controls:
_UNICODE_SPACE = r"\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Printable text with at least one character that is not white space: what the schema
# accepts is still accepted once stripped (no 422 for "   ").
_VISIBLE_TEXT = rf"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f-\x9f{_UNICODE_SPACE}][^\x00-\x1f\x7f]*$"
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_VISIBLE_TEXT),
]
_EMAIL_PART = rf"[^@\x00-\x20\x7f-\x9f{_UNICODE_SPACE}]+"
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=320,
        pattern=rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$",
    ),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
Slug = Annotated[str, StringConstraints(pattern=SLUG)]
MemberIdText = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_VISIBLE_TEXT),
]
# How many hex digits a UID needs is the protocol's rule (normalize_uid): a 400 if too few.
BadgeUid = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        max_length=60,
        pattern=r"^[0-9A-Fa-f:\- ]*[0-9A-Fa-f][0-9A-Fa-f:\- ]*$",
    ),
]
Seconds = Annotated[int, Field(ge=0, le=7 * 24 * 3600)]
# Database row ids: bounded so that no request can overflow a 32-bit integer column.
RowId = Annotated[int, PathParam(ge=1, le=2_147_483_647)]
Window = Annotated[int, Field(ge=0, le=3600)]


class ErrorPublic(BaseModel):
    """Every error answer: a message saying what is wrong."""

    detail: str


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (no mass assignment)."""

    model_config = ConfigDict(extra="forbid")


# -- accounts ----------------------------------------------------------------------------


class LoginRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"email": "ada@lab.example", "password": "correct horse"}},
    )
    email: Email
    password: Password


class LoginPublic(BaseModel):
    member_id: str
    csrf_token: str


class MePublic(BaseModel):
    id: str
    name: str
    email: str | None
    category: str
    roles: list[str]
    trainer_of: list[str]


class MeUpdate(StrictModel):
    """What members may change about themselves."""

    name: Name | None = None
    email: Email | None = None


class PasswordChange(StrictModel):
    current_password: Password
    new_password: Password


class ApiTokenCreate(StrictModel):
    name: Name


class ApiTokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiTokenPublic(BaseModel):
    id: int
    name: str
    token: str = Field(description="Shown once: send it as 'Authorization: Bearer <token>'.")


# -- members, badges, categories ---------------------------------------------------------


class MemberCreate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"name": "Ada Lovelace", "email": "ada@lab.example", "category": "student"}
        },
    )
    name: Name
    email: Email | None = None
    category: Slug = "member"
    password: Password | None = None


class MemberUpdate(StrictModel):
    """What a manager may change (roles have their own endpoint, for admins)."""

    name: Name | None = None
    email: Email | None = None
    category: Slug | None = None
    active: bool | None = None


class MemberPublic(BaseModel):
    id: str
    name: str
    email: str | None
    category: str
    active: bool
    created_at: datetime
    roles: list[str]


class RolesUpdate(StrictModel):
    roles: list[Literal["manager", "treasurer", "admin"]] = Field(max_length=3)


class BadgeCreate(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"uid": "04:A1:B2:C3"}})
    uid: BadgeUid


class BadgeUpdate(StrictModel):
    status: Literal["active", "lost", "blocked"]


class BadgePublic(BaseModel):
    id: int
    uid: str
    member_id: str
    status: str
    created_at: datetime
    # Anti-cloning (docs/security.md): plain | protected; when its counter was reported
    # twice (two cards carry its sector: blocked).
    protection: str = "plain"
    cloned_at: datetime | None = None


class CategoryCreate(StrictModel):
    id: Slug
    name: Name


class CategoryPublic(BaseModel):
    id: str
    name: str


# -- machines ----------------------------------------------------------------------------


class MachineCreate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "id": "laser",
                "name": "Laser cutter",
                "mode": "toggle",
                "idle_timeout_s": 600,
            }
        },
    )
    id: Slug
    name: Name
    mode: Mode = Mode.TOGGLE
    idle_timeout_s: Seconds = 0
    max_duration_s: Seconds = 0
    heartbeat_interval_s: int = Field(default=60, ge=5, le=3600)
    warning_s: Window = 60
    card_removal_grace_s: Window = 3
    supervisor_window_s: Window = 30
    training_type_ids: list[Slug] = Field(default_factory=list, max_length=20)


class MachineUpdate(StrictModel):
    name: Name | None = None
    mode: Mode | None = None
    idle_timeout_s: Seconds | None = None
    max_duration_s: Seconds | None = None
    heartbeat_interval_s: int | None = Field(default=None, ge=5, le=3600)
    warning_s: Window | None = None
    card_removal_grace_s: Window | None = None
    supervisor_window_s: Window | None = None


class OutOfServiceRequest(StrictModel):
    reason: Reason


class CommandPublic(BaseModel):
    """A command sent to the machine's controller and whether it was carried out."""

    id: str
    kind: str
    reason: str | None
    issued_at: datetime
    expires_at: datetime
    sent_count: int
    status: Literal["pending", "applied", "expired"]
    applied_at: datetime | None
    applied_message: str | None


class LockRequest(StrictModel):
    reason: Reason | None = None


class LockPublic(BaseModel):
    command_id: str | None = Field(description="None when the machine has no controller.")


class ControllerCredentialsPublic(BaseModel):
    controller_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="Shown once.")
    key_hex: str = Field(
        description="Snapshot signing key, shown once: put it in the controller config."
    )


class EnrollmentCreate(StrictModel):
    member_id: MemberIdText
    window_s: int = Field(default=120, ge=10, le=900)


class EnrollmentPublic(BaseModel):
    id: int
    machine_id: str
    member_id: str
    expires_at: datetime
    badge_uid: str | None
    completed_at: datetime | None


# -- trainings ---------------------------------------------------------------------------


class TrainingTypeCreate(StrictModel):
    id: Slug
    name: Name
    machine_ids: list[Slug] = Field(min_length=1, max_length=50)
    lapse_months: int | None = Field(default=None, ge=1, le=120)


class TrainingTypeUpdate(StrictModel):
    name: Name | None = None
    machine_ids: list[Slug] | None = Field(default=None, min_length=1, max_length=50)
    lapse_months: int | None = Field(default=None, ge=1, le=120)
    never_lapses: bool = False


class TrainingTypePublic(BaseModel):
    id: str
    name: str
    lapse_months: int | None
    machine_ids: list[str]


class TrainingGrant(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"member_id": "ada", "training_type_id": "laser", "level": "autonomous"}
        },
    )
    member_id: MemberIdText
    training_type_id: Slug
    level: Level
    expires_at: AwareDatetime | None = None


class TrainingRevoke(StrictModel):
    member_id: MemberIdText
    training_type_id: Slug


class TrainingPublic(BaseModel):
    id: int
    member_id: str
    member_name: str | None
    training_type_id: str
    level: str
    granted_by: str | None
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    lapses_at: datetime | None
