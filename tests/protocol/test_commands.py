"""Signed server → controller commands: round trip, forgery, expiry, replay, validation."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    Command,
    CommandKind,
    ExpiredError,
    ProtocolError,
    ReplayError,
    SignatureError,
    encode_command,
    verify_command,
)
from protocol.commands import CLOCK_SKEW_S, MAX_VALIDITY_S

KEY = b"k" * 32
NOW = 1_767_261_600


def make_command(**overrides: Any) -> Command:
    values: dict[str, Any] = {
        "command_id": "c-0001",
        "controller_id": "ctl-laser-1",
        "site": "lab",
        "machine": "laser-1",
        "kind": CommandKind.OUT_OF_SERVICE,
        "issued_at": NOW,
        "expires_at": NOW + 300,
        "reason": "mirror cracked",
    }
    values.update(overrides)
    return Command(**values)


def resign_body(payload: bytes, **changes: Any) -> bytes:
    """The payload with its body changed but the old signature kept (a forgery)."""
    d = json.loads(payload)
    d["command"].update(changes)
    return json.dumps(d).encode()


def test_commands_round_trip_every_kind() -> None:
    for kind in CommandKind:
        command = make_command(
            kind=kind, timeout_s=30 if kind is CommandKind.ENROLL_BADGE else None
        )
        assert verify_command(encode_command(command, KEY), KEY, now=NOW + 1) == command


def test_commands_refuse_wrong_key() -> None:
    with pytest.raises(SignatureError):
        verify_command(encode_command(make_command(), KEY), b"x" * 32, now=NOW)


def test_commands_refuse_tampered_body() -> None:
    forged = resign_body(encode_command(make_command(), KEY), kind="back_in_service")
    with pytest.raises(SignatureError):
        verify_command(forged, KEY, now=NOW)


def test_commands_signature_differs_from_config_style_signature() -> None:
    """The domain label keeps a command's signature from being a bare-body HMAC."""
    import hashlib
    import hmac

    from protocol._fields import canonical

    command = make_command()
    payload = json.loads(encode_command(command, KEY))
    bare = hmac.new(KEY, canonical(command.to_dict()), hashlib.sha256).hexdigest()
    assert payload["signature"] != bare


def test_commands_refuse_expired() -> None:
    payload = encode_command(make_command(), KEY)
    with pytest.raises(ExpiredError) as info:
        verify_command(payload, KEY, now=NOW + 301)
    assert info.value.field == "command.expires_at"


def test_commands_refuse_issued_in_the_future() -> None:
    payload = encode_command(make_command(issued_at=NOW + 1000, expires_at=NOW + 1200), KEY)
    with pytest.raises(ExpiredError) as info:
        verify_command(payload, KEY, now=NOW)
    assert info.value.field == "command.issued_at"
    # Within the tolerated clock skew it is accepted.
    verify_command(payload, KEY, now=NOW + 1000 - CLOCK_SKEW_S)


def test_commands_refuse_replayed_id() -> None:
    payload = encode_command(make_command(), KEY)
    with pytest.raises(ReplayError):
        verify_command(payload, KEY, now=NOW, seen={"c-0001"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "self_destruct"}, "command.kind"),
        ({"command_id": ""}, "command.command_id"),
        ({"expires_at": NOW}, "command.expires_at"),
        ({"expires_at": NOW + MAX_VALIDITY_S + 1}, "command.expires_at"),
        ({"timeout_s": 0}, "command.timeout_s"),
        ({"issued_at": "now"}, "command.issued_at"),
    ],
)
def test_commands_refuse_malformed_body_naming_field(changes: dict[str, Any], field: str) -> None:
    from protocol._signing import sign
    from protocol.commands import DOMAIN

    body = make_command().to_dict()
    body.update(changes)
    payload = json.dumps(
        {"schema_version": 1, "command": body, "signature": sign(KEY, DOMAIN, body)}
    )
    with pytest.raises(ProtocolError) as info:
        verify_command(payload, KEY, now=NOW)
    assert info.value.field == field


def test_commands_refuse_other_schema_version() -> None:
    d = json.loads(encode_command(make_command(), KEY))
    d["schema_version"] = 2
    with pytest.raises(ProtocolError) as info:
        verify_command(json.dumps(d), KEY, now=NOW)
    assert info.value.field == "schema_version"


def test_commands_enroll_timeout_defaults() -> None:
    assert make_command(kind=CommandKind.ENROLL_BADGE).enroll_timeout_s == 60
    assert make_command(timeout_s=5).enroll_timeout_s == 5


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_commands_any_single_byte_change_is_refused(position: int, value: int) -> None:
    payload = bytearray(encode_command(make_command(), KEY))
    index = position % len(payload)
    if payload[index] == value:
        return
    payload[index] = value
    try:
        command = verify_command(bytes(payload), KEY, now=NOW)
    except ProtocolError:
        return
    # Only changes outside the signed body (e.g. whitespace-equivalent) may pass.
    assert command == make_command()


def test_commands_replace_keeps_validation() -> None:
    command = replace(make_command(), kind=CommandKind.LOCK)
    assert verify_command(encode_command(command, KEY), KEY, now=NOW).kind is CommandKind.LOCK
