"""Answering a controller's online check for a badge missing from its snapshot."""

from __future__ import annotations

import logging

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
from server.service_layer.commands import AnswerAuthRequest, OutgoingMessage
from server.service_layer.configs import machine_grants
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)


def answer_auth_request(cmd: AnswerAuthRequest, uow: SqlAlchemyUnitOfWork) -> AuthResponse | None:
    """Decide from the database, as the next snapshot will; None when the request is unusable."""
    try:
        address = parse_topic(cmd.topic)
        request = AuthRequest.decode(cmd.payload)
        uid = normalize_uid(request.badge_uid)
    except ProtocolError as exc:
        logger.warning("invalid auth request on %s: %s", cmd.topic, exc)
        return None
    controller = uow.controllers.get(request.controller_id)
    if controller is None or controller.machine_id != address.machine:
        logger.warning("auth request from unregistered controller %r", request.controller_id)
        return None
    grant = next(
        (g for g in machine_grants(uow, address.machine, cmd.received_at) if g.badge_uid == uid),
        None,
    )
    issued = int(cmd.received_at.timestamp())
    if grant is not None and not _may_start(uow, grant.member_id):
        response = AuthResponse(
            request_id=request.request_id,
            controller_id=controller.id,
            granted=False,
            issued_at=issued,
            reason=DenyReason.INSUFFICIENT_BALANCE,
        )
    elif grant is not None:
        response = AuthResponse(
            request_id=request.request_id,
            controller_id=controller.id,
            granted=True,
            issued_at=issued,
            member_id=grant.member_id,
            level=grant.level,
            expires_at=None if grant.expires_at is None else int(grant.expires_at.timestamp()),
        )
    else:
        badge = uow.badges.by_uid(uid)
        reason = (
            DenyReason.NOT_TRAINED
            if badge and badge.status == "active"
            else DenyReason.UNKNOWN_BADGE
        )
        response = AuthResponse(
            request_id=request.request_id,
            controller_id=controller.id,
            granted=False,
            issued_at=issued,
            reason=reason,
        )
    payload = encode_auth_response(response, bytes.fromhex(controller.key_hex))
    uow.outgoing.append(
        OutgoingMessage(auth_response_topic(address.site, address.machine), payload)
    )
    if controller.machine.snapshot_version > (request.snapshot_version or 0):
        # The controller holds an old snapshot: make sure the current one reaches it.
        uow.machines_to_publish.add(address.machine)
    return response


def _may_start(uow: SqlAlchemyUnitOfWork, member_id: str) -> bool:
    """False for a prepaid member whose balance is below their category's threshold."""
    status = prepaid.statuses(uow, {member_id}).get(member_id)
    return status is None or status.may_start
