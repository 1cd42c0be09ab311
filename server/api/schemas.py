"""Request and response schemas of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

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
