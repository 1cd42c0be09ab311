"""The live state of a machine as the floor view shows it."""

from __future__ import annotations

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
