"""The online check of a badge that the controller's snapshot does not know.

A badge enrolled a minute ago is not yet on the machine's snapshot. The controller
then publishes an `AuthRequest` on `auth/request` and waits a short time (1.5 s by
default) for the server's `AuthResponse` on `auth/response`; no answer in time means
deny. The response is signed with HMAC-SHA256 under the controller's key (domain
label b"fablab-auth-response:") and names the request it answers, so it cannot be
forged nor reused for another tap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import _fields as f
from protocol._signing import check, sign
from protocol.errors import ProtocolError
from protocol.events import DenyReason, Level

SCHEMA_VERSION = 1
DOMAIN = b"fablab-auth-response:"
DEFAULT_AUTH_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class AuthRequest:
    """Controller → server: may this badge use my machine now?"""

    request_id: str
    controller_id: str
    badge_uid: str
    wall_time: float
    snapshot_version: int | None = None  # the snapshot the controller holds, if any
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return f.dump(
            {
                "schema_version": self.schema_version,
                "request_id": self.request_id,
                "controller_id": self.controller_id,
                "badge_uid": self.badge_uid,
                "wall_time": self.wall_time,
                "snapshot_version": self.snapshot_version,
            }
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> AuthRequest:
        d = f.load_object(payload, "auth_request")
        f.check_schema_version(d, SCHEMA_VERSION)
        return cls(
            request_id=f.req_str(d, "request_id", max_len=64),
            controller_id=f.req_str(d, "controller_id", max_len=64),
            badge_uid=f.req_str(d, "badge_uid", max_len=40),
            wall_time=f.req_float(d, "wall_time"),
            snapshot_version=f.opt_int(d, "snapshot_version"),
        )


@dataclass(frozen=True)
class AuthResponse:
    """Server → controller: the decision for one AuthRequest.

    Granted: `member_id` and `level` are set (`expires_at` if the training lapses).
    Refused: `reason` says why (`unknown_badge`, `not_trained`, `training_expired`…).
    """

    request_id: str
    controller_id: str
    granted: bool
    issued_at: int
    member_id: str | None = None
    level: Level | None = None
    expires_at: int | None = None
    reason: DenyReason | None = None

    def __post_init__(self) -> None:
        # Accept the enums' string values too (as decoded JSON gives them), never a typo.
        try:
            if self.level is not None:
                object.__setattr__(self, "level", Level(self.level))
            if self.reason is not None:
                object.__setattr__(self, "reason", DenyReason(self.reason))
        except ValueError as exc:
            raise ProtocolError("response", str(exc)) from None
        if self.granted and (self.member_id is None or self.level is None):
            raise ProtocolError("response.member_id", "a grant needs member_id and level")
        if not self.granted and self.reason is None:
            raise ProtocolError("response.reason", "a refusal needs a reason")

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "controller_id": self.controller_id,
            "granted": self.granted,
            "issued_at": self.issued_at,
            "member_id": self.member_id,
            "level": None if self.level is None else self.level.value,
            "expires_at": self.expires_at,
            "reason": None if self.reason is None else self.reason.value,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuthResponse:
        p = "response."
        return cls(
            request_id=f.req_str(d, "request_id", p, max_len=64),
            controller_id=f.req_str(d, "controller_id", p, max_len=64),
            granted=f.req_bool(d, "granted", p),
            issued_at=f.req_int(d, "issued_at", p),
            member_id=f.opt_str(d, "member_id", p, max_len=64),
            level=None if d.get("level") is None else f.req_enum(d, "level", Level, p),
            expires_at=f.opt_int(d, "expires_at", p),
            reason=None if d.get("reason") is None else f.req_enum(d, "reason", DenyReason, p),
        )


def encode_auth_response(response: AuthResponse, key: bytes) -> bytes:
    """The signed `auth/response` payload."""
    body = response.to_dict()
    return f.dump(
        {"schema_version": SCHEMA_VERSION, "response": body, "signature": sign(key, DOMAIN, body)}
    )


def verify_auth_response(payload: bytes | str, key: bytes) -> AuthResponse:
    """Decode and verify an `auth/response`: SignatureError, or ProtocolError naming the field.

    Matching it to a pending request (`request_id`, `controller_id`) is the caller's check.
    """
    d = f.load_object(payload, "auth_response")
    f.check_schema_version(d, SCHEMA_VERSION)
    body = f.req_object(d, "response")
    check(key, DOMAIN, body, f.req_str(d, "signature", max_len=128))
    return AuthResponse.from_dict(body)
