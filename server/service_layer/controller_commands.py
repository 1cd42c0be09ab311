"""Signed commands to a machine's controller, sent after the transaction commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from protocol import Command, CommandKind, command_topic, encode_command
from server.adapters.orm import ControllerCommand, Machine
from server.service_layer.commands import OutgoingMessage
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

# Long enough for a controller that is reconnecting, short enough not to surprise anyone.
COMMAND_VALIDITY_S = 300


def send_command(
    uow: SqlAlchemyUnitOfWork,
    machine: Machine,
    kind: CommandKind,
    at: datetime,
    *,
    reason: str | None = None,
    timeout_s: int | None = None,
) -> str | None:
    """Record and queue a signed command for the machine's controller, in the caller's
    transaction (sent once it commits); returns its id (None: no controller).

    Commands are not retained: a controller away now gets it when it comes back online
    (ingest's status handling resends it), until it confirms it or it expires. What
    they set (out of service…) is also in the machine's signed, retained config.
    """
    controller = machine.controller
    if controller is None:
        return None
    issued = int(at.timestamp())
    command = Command(
        command_id=uuid.uuid4().hex,
        controller_id=controller.id,
        site=machine.site,
        machine=machine.id,
        kind=kind,
        issued_at=issued,
        expires_at=issued + COMMAND_VALIDITY_S,
        reason=reason,
        timeout_s=timeout_s,
    )
    payload = encode_command(command, bytes.fromhex(controller.key_hex))
    uow.commands.add(
        ControllerCommand(
            id=command.command_id,
            machine_id=machine.id,
            controller_id=controller.id,
            kind=kind.value,
            reason=reason,
            issued_at=at,
            expires_at=at + timedelta(seconds=COMMAND_VALIDITY_S),
            payload=payload.decode(),
            sent_count=1,
        )
    )
    uow.outgoing.append(OutgoingMessage(command_topic(machine.site, machine.id), payload, qos=1))
    return command.command_id


def resend(
    uow: SqlAlchemyUnitOfWork, machine: Machine, pending: Sequence[ControllerCommand]
) -> int:
    """Queue again these unconfirmed commands of the machine's controller (same bytes,
    same id).

    Called when the controller says it is online: a command published while it was
    away is delivered now; one it already applied is ignored by it as a replay.
    """
    topic = command_topic(machine.site, machine.id)
    for command in pending:
        command.sent_count += 1
        uow.outgoing.append(OutgoingMessage(topic, command.payload.encode(), qos=1))
    return len(pending)


def mark_applied(
    uow: SqlAlchemyUnitOfWork, command_id: str, at: datetime, message: str | None
) -> bool:
    """The controller reports the command carried out; False if it is not one of ours."""
    command = uow.commands.get(command_id)
    if command is None:
        return False
    if command.applied_at is None:
        command.applied_at = at
        command.applied_message = message[:500] if message else None
    return True
