"""The online badge check: requests round trip, signed responses verify or are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import (
    AuthRequest,
    AuthResponse,
    DenyReason,
    Level,
    ProtocolError,
    SignatureError,
    encode_auth_response,
    encode_command,
    verify_auth_response,
)
from protocol._signing import sign
from protocol.auth import DOMAIN
from protocol.commands import Command, CommandKind

KEY = b"k" * 32


def granted(**overrides: Any) -> AuthResponse:
    values: dict[str, Any] = {
        "request_id": "r-1",
        "controller_id": "ctl-laser-1",
        "granted": True,
        "issued_at": 1_767_261_600,
        "member_id": "m-0009",
        "level": Level.AUTONOMOUS,
    }
    values.update(overrides)
    return AuthResponse(**values)


def test_auth_request_round_trips() -> None:
    request = AuthRequest("r-1", "ctl-laser-1", "04A1B2C3", 1_767_261_600.5, snapshot_version=12)
    assert AuthRequest.decode(request.encode()) == request
    no_snapshot = AuthRequest("r-2", "ctl-laser-1", "04A1B2C3", 1.0)
    assert AuthRequest.decode(no_snapshot.encode()) == no_snapshot


def test_auth_request_decode_names_field() -> None:
    d = json.loads(AuthRequest("r-1", "c", "04A1B2C3", 1.0).encode())
    del d["badge_uid"]
    with pytest.raises(ProtocolError) as info:
        AuthRequest.decode(json.dumps(d))
    assert info.value.field == "badge_uid"


def test_auth_response_round_trips_grant_and_refusal() -> None:
    for response in (
        granted(expires_at=1_800_000_000),
        AuthResponse("r-1", "ctl-laser-1", False, 1, reason=DenyReason.NOT_TRAINED),
    ):
        assert verify_auth_response(encode_auth_response(response, KEY), KEY) == response


def test_auth_response_refuses_wrong_key_and_tampering() -> None:
    payload = encode_auth_response(granted(), KEY)
    with pytest.raises(SignatureError):
        verify_auth_response(payload, b"z" * 32)
    d = json.loads(payload)
    d["response"]["level"] = "trainer"
    with pytest.raises(SignatureError):
        verify_auth_response(json.dumps(d), KEY)


def test_auth_response_is_not_a_command_signature() -> None:
    """A signed command body cannot pass as an auth response (domain labels differ)."""
    command = Command("r-1", "ctl-laser-1", "lab", "laser-1", CommandKind.LOCK, 1, 2)
    d = json.loads(encode_command(command, KEY))
    with pytest.raises(ProtocolError):
        verify_auth_response(
            json.dumps(
                {"schema_version": 1, "response": d["command"], "signature": d["signature"]}
            ),
            KEY,
        )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"granted": "yes"}, "response.granted"),
        ({"level": "god"}, "response.level"),
        ({"member_id": None}, "response.member_id"),
        ({"granted": False}, "response.reason"),
        ({"granted": False, "reason": "because"}, "response.reason"),
    ],
)
def test_auth_response_validation_names_field(changes: dict[str, Any], field: str) -> None:
    body = granted().to_dict()
    body.update(changes)
    payload = json.dumps(
        {"schema_version": 1, "response": body, "signature": sign(KEY, DOMAIN, body)}
    )
    with pytest.raises(ProtocolError) as info:
        verify_auth_response(payload, KEY)
    assert info.value.field == field


def test_auth_response_reason_given_as_text_becomes_the_enum() -> None:
    response = AuthResponse("r1", "c", False, 0, reason="not_trained")  # type: ignore[arg-type]
    assert response.reason is DenyReason.NOT_TRAINED


def test_auth_response_unknown_reason_text_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        AuthResponse("r1", "c", False, 0, reason="nope")  # type: ignore[arg-type]
