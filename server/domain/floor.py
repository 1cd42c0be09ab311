"""The live state of a machine as the floor view shows it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class MachineState(StrEnum):
    FREE = "free"
    IN_USE = "in_use"
    OFFLINE = "offline"
    OUT_OF_SERVICE = "out_of_service"


def machine_state(*, controller_online: bool, out_of_service: bool, in_use: bool) -> MachineState:
    """In use wins (a session runs even if the link dropped), then offline, then service."""
    if in_use:
        return MachineState.IN_USE
    if not controller_online:
        return MachineState.OFFLINE
    if out_of_service:
        return MachineState.OUT_OF_SERVICE
    return MachineState.FREE


def controller_online(
    *,
    status: str,
    last_seen_at: datetime | None,
    heartbeat_interval_s: int,
    now: datetime,
    missed_heartbeats: int = 3,
) -> bool:
    """Online per its retained status and heard from within `missed_heartbeats` intervals.

    A controller re-announces its status every heartbeat interval (and sends session
    heartbeats), so silence means it is gone even if its last will was never published.
    """
    if status != "online":
        return False
    if last_seen_at is None:
        return True
    return now - last_seen_at <= timedelta(seconds=missed_heartbeats * heartbeat_interval_s)
