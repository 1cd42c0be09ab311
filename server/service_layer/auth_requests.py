"""Answering a controller's online check for a badge missing from its snapshot."""

from __future__ import annotations

import logging
from datetime import datetime

from protocol import (
    AuthRequest,
    AuthResponse,
    DenyReason,
    ProtocolError,
    auth_response_topic,
    encode_auth_response,
    normalize_uid,
    parse_topic,
)
from server.service_layer import prepaid
from server.service_layer.access_index import (
    AccessFacts,
    ControllerEntry,
    DatabaseAccess,
    MachineAccess,
)
from server.service_layer.commands import AnswerAuthRequest, OutgoingMessage
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


def answer_auth_request(cmd: AnswerAuthRequest, uow: SqlAlchemyUnitOfWork) -> AuthResponse | None:
    """Decide as the machine's next snapshot will; None when the request is unusable.

    The facts come from the process's access index when it has one (no database
    round trip while it is current), else from the database.
    """
    index = uow.access_index
    facts = index.reader(uow) if index is not None else DatabaseAccess(uow)
    try:
        address = parse_topic(cmd.topic)
        request = AuthRequest.decode(cmd.payload)
        uid = normalize_uid(request.badge_uid)
    except ProtocolError as exc:
        logger.warning("invalid auth request on %s: %s", cmd.topic, exc)
        return None
    controller = facts.controller(request.controller_id)
    if controller is None or controller.machine_id != address.machine:
        logger.warning("auth request from unregistered controller %r", request.controller_id)
        return None
    machine = facts.machine(address.machine)
    if machine is None:  # removed since the controller was read
        return None
    response = _decide(request, controller, machine, facts, uid, cmd.received_at)
    if response.member_id is not None and _prepaid_refuses(uow, facts, response.member_id):
        response = AuthResponse(
            request_id=request.request_id,
            controller_id=controller.controller_id,
            granted=False,
            issued_at=response.issued_at,
            reason=DenyReason.INSUFFICIENT_BALANCE,
        )
    payload = encode_auth_response(response, bytes.fromhex(controller.key_hex))
    uow.outgoing.append(
        OutgoingMessage(auth_response_topic(address.site, address.machine), payload)
    )
    if machine.snapshot_version > (request.snapshot_version or 0):
        # The controller holds an old snapshot: make sure the current one reaches it.
        uow.machines_to_publish.add(address.machine)
    return response


def _decide(
    request: AuthRequest,
    controller: ControllerEntry,
    machine: MachineAccess,
    facts: AccessFacts,
    uid: str,
    received_at: datetime,
) -> AuthResponse:
    grant = machine.grant(uid, received_at)
    issued = int(received_at.timestamp())
    if grant is not None:
        return AuthResponse(
            request_id=request.request_id,
            controller_id=controller.controller_id,
            granted=True,
            issued_at=issued,
            member_id=grant.member_id,
            level=grant.level,
            expires_at=None if grant.expires_at is None else int(grant.expires_at.timestamp()),
        )
    reason = (
        DenyReason.NOT_TRAINED if facts.badge_status(uid) == "active" else DenyReason.UNKNOWN_BADGE
    )
    return AuthResponse(
        request_id=request.request_id,
        controller_id=controller.controller_id,
        granted=False,
        issued_at=issued,
        reason=reason,
    )


def _prepaid_refuses(uow: SqlAlchemyUnitOfWork, facts: AccessFacts, member_id: str) -> bool:
    """True for a prepaid member whose balance is below their category's threshold.

    Only a member of a prepaid category costs a database read (their balance); the
    categories themselves come from the access facts like the rest of the check.
    """
    prepaid_categories = facts.prepaid_categories()
    if not prepaid_categories or facts.member_category(member_id) not in prepaid_categories:
        return False
    status = prepaid.statuses(uow, {member_id}).get(member_id)
    return status is not None and not status.may_start
