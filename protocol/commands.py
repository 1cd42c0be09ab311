"""Server → controller commands: signed, short-lived and used at most once.

A command travels on the machine's `command` topic (QoS 1, not retained). The server
signs it with HMAC-SHA256 under the controller's key, like the config, so that only
the server can switch a machine out of service or back in. Every command carries an
id and a validity window (`issued_at` .. `expires_at`, at most MAX_VALIDITY_S long):
the controller refuses it outside that window and ignores an id it has already seen,
so a recorded command cannot be replayed later.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol import _fields as f
from protocol._signing import check, sign
from protocol.errors import ExpiredError, ProtocolError, ReplayError

SCHEMA_VERSION = 1
DOMAIN = b"fablab-command:"
MAX_VALIDITY_S = 3600  # a command may be valid for at most an hour
CLOCK_SKEW_S = 120  # tolerated difference between the server's and controller's clocks
DEFAULT_ENROLL_TIMEOUT_S = 60


class CommandKind(StrEnum):
    """What the server asks a controller to do."""

    LOCK = "lock"  # end the running session now (reason remote_lock); badges work again after
    OUT_OF_SERVICE = "out_of_service"  # end the session, refuse badges until back_in_service
    BACK_IN_SERVICE = "back_in_service"  # undo out_of_service (and an "oops" report)
    ENROLL_BADGE = "enroll_badge"  # report the next badge read as badge_enrolled, don't decide


@dataclass(frozen=True)
class Command:
    """One command for one controller; `command_id` is unique (a UUID)."""

    command_id: str
    controller_id: str
    site: str
    machine: str
    kind: CommandKind
    issued_at: int
    expires_at: int
    reason: str | None = None
    timeout_s: int | None = None  # enroll_badge: how long to wait for the badge

    def to_dict(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "controller_id": self.controller_id,
            "site": self.site,
            "machine": self.machine,
            "kind": self.kind.value,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        p = "command."
        command = cls(
            command_id=f.req_str(d, "command_id", p, max_len=64),
            controller_id=f.req_str(d, "controller_id", p, max_len=64),
            site=f.req_str(d, "site", p, max_len=64),
            machine=f.req_str(d, "machine", p, max_len=64),
            kind=f.req_enum(d, "kind", CommandKind, p),
            issued_at=f.req_int(d, "issued_at", p),
            expires_at=f.req_int(d, "expires_at", p),
            reason=f.opt_str(d, "reason", p, max_len=500),
            timeout_s=f.opt_int(d, "timeout_s", p, minimum=1),
        )
        if command.expires_at <= command.issued_at:
            raise ProtocolError(p + "expires_at", "must be after issued_at")
        if command.expires_at - command.issued_at > MAX_VALIDITY_S:
            raise ProtocolError(p + "expires_at", f"more than {MAX_VALIDITY_S} s after issued_at")
        return command

    @property
    def enroll_timeout_s(self) -> int:
        return self.timeout_s if self.timeout_s is not None else DEFAULT_ENROLL_TIMEOUT_S


def encode_command(command: Command, key: bytes) -> bytes:
    """The signed `command` payload."""
    body = command.to_dict()
    return f.dump(
        {"schema_version": SCHEMA_VERSION, "command": body, "signature": sign(key, DOMAIN, body)}
    )


def verify_command(
    payload: bytes | str, key: bytes, *, now: float, seen: Container[str] = ()
) -> Command:
    """Decode and verify a `command` payload at wall time `now` (Unix seconds).

    Order: payload and `schema_version`, signature (SignatureError), body fields
    (ProtocolError), validity window (ExpiredError: past `expires_at`, or `issued_at`
    more than CLOCK_SKEW_S in the future), then `seen` (ReplayError when the id is in it).
    Whether the command is addressed to this controller is the caller's check.
    """
    d = f.load_object(payload, "command")
    f.check_schema_version(d, SCHEMA_VERSION)
    body = f.req_object(d, "command")
    check(key, DOMAIN, body, f.req_str(d, "signature", max_len=128))
    command = Command.from_dict(body)
    if now > command.expires_at:
        raise ExpiredError("command.expires_at", f"expired {now - command.expires_at:.0f} s ago")
    if command.issued_at > now + CLOCK_SKEW_S:
        raise ExpiredError(
            "command.issued_at", f"{command.issued_at - now:.0f} s in the future (clock skew?)"
        )
    if command.command_id in seen:
        raise ReplayError("command.command_id", "already received: replay ignored")
    return command
