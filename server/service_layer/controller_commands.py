"""Signed commands to a machine's controller, sent after the transaction commits."""

from __future__ import annotations

import uuid
from datetime import datetime

from protocol import Command, CommandKind, command_topic, encode_command
from server.adapters.orm import Machine
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
    """Queue a signed command for the machine's controller; returns its id (None: no controller).

    Commands are not retained: the state they set (out of service…) is also in the
    machine's signed config, which is, so a controller offline now still converges.
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
    uow.outgoing.append(OutgoingMessage(command_topic(machine.site, machine.id), payload, qos=1))
    return command.command_id
