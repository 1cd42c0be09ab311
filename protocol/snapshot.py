"""The signed, versioned per-machine config: settings plus the permission snapshot.

The server signs it with HMAC-SHA256 under the controller's own key and publishes it
retained on the machine's `config` topic. Badges appear only as keyed digests, so a
reader of the broker cannot learn badge UIDs from it (and clone them).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import _fields as f
from protocol.errors import ProtocolError, SignatureError, StaleSnapshotError
from protocol.events import Level

SCHEMA_VERSION = 1
_UID = re.compile(r"^[0-9A-F]{4,40}$")


class StaffRole(StrEnum):
    """What a staff badge may do on a machine beyond (or without) a training."""

    SUPERVISOR = "supervisor"  # may confirm a `supervised` member's session
    MANAGER = "manager"  # may switch an out-of-service machine on for maintenance


class Mode(StrEnum):
    TOGGLE = "toggle"  # tap to start, tap to end
    HOLD = "hold"  # the badge stays on the reader


def normalize_uid(uid: str) -> str:
    """Canonical badge UID: uppercase hex, separators removed; ProtocolError otherwise."""
    clean = re.sub(r"[\s:\-]", "", uid).upper()
    if not _UID.match(clean):
        raise ProtocolError("badge_uid", "must be 4 to 40 hexadecimal digits")
    return clean


def badge_digest(key: bytes, uid: str) -> str:
    """The keyed digest under which a badge appears in this controller's snapshot."""
    mac = hmac.new(key, b"badge:" + normalize_uid(uid).encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


# Optional settings: omitted from the payload while at their default, so configs that
# do not use them are byte-for-byte what they were before these settings existed.
_OPTIONAL_SETTINGS: dict[str, int] = {
    "warning_s": 60,  # buzzer warning this long before an idle-timeout / max-duration stop
    "card_removal_grace_s": 3,  # hold mode: the badge may leave the reader this long
    "supervisor_window_s": 30,  # supervised level: time for the supervisor's badge
}


def _opt_bool(d: dict[str, Any], key: str, prefix: str, *, default: bool) -> bool:
    """An optional boolean field: `default` when absent or null."""
    return default if d.get(key) is None else f.req_bool(d, key, prefix)


@dataclass(frozen=True)
class MachineSettings:
    name: str
    mode: Mode = Mode.TOGGLE
    idle_timeout_s: int = 0  # 0 = no idle timeout
    max_duration_s: int = 0  # 0 = no limit
    heartbeat_interval_s: int = 60
    out_of_service: bool = False
    out_of_service_reason: str | None = None
    warning_s: int = _OPTIONAL_SETTINGS["warning_s"]
    card_removal_grace_s: int = _OPTIONAL_SETTINGS["card_removal_grace_s"]
    supervisor_window_s: int = _OPTIONAL_SETTINGS["supervisor_window_s"]
    # The lab's rule for badges without the anti-cloning sector (omitted when True).
    plain_badges_allowed: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode.value,
            "idle_timeout_s": self.idle_timeout_s,
            "max_duration_s": self.max_duration_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "out_of_service": self.out_of_service,
            "out_of_service_reason": self.out_of_service_reason,
        }
        for name, default in _OPTIONAL_SETTINGS.items():
            if getattr(self, name) != default:
                d[name] = getattr(self, name)
        if not self.plain_badges_allowed:
            d["plain_badges_allowed"] = False
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], prefix: str = "settings.") -> MachineSettings:
        optional: dict[str, Any] = {}
        for name in _OPTIONAL_SETTINGS:
            value = f.opt_int(d, name, prefix)
            if value is not None:
                optional[name] = value
        return cls(
            name=f.req_str(d, "name", prefix),
            mode=f.req_enum(d, "mode", Mode, prefix),
            idle_timeout_s=f.req_int(d, "idle_timeout_s", prefix),
            max_duration_s=f.req_int(d, "max_duration_s", prefix),
            heartbeat_interval_s=f.req_int(d, "heartbeat_interval_s", prefix, minimum=1),
            out_of_service=f.req_bool(d, "out_of_service", prefix),
            out_of_service_reason=f.opt_str(d, "out_of_service_reason", prefix, max_len=500),
            plain_badges_allowed=_opt_bool(d, "plain_badges_allowed", prefix, default=True),
            **optional,
        )


@dataclass(frozen=True)
class Prepaid:
    """What a prepaid member may do on this machine, decided by the server.

    `may_start`: the member's balance is at or above the category's threshold.
    `allowance_s`: seconds of use this machine may still give the member (balance plus
    the overdraft bound, at this machine's price for them), counted down by the
    controller from the snapshot; None when the machine charges them nothing.
    """

    may_start: bool
    allowance_s: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"may_start": self.may_start, "allowance_s": self.allowance_s}

    @classmethod
    def from_dict(cls, d: Any, prefix: str) -> Prepaid:
        if not isinstance(d, dict):
            raise ProtocolError(prefix.rstrip("."), "must be an object")
        return cls(
            may_start=f.req_bool(d, "may_start", prefix),
            allowance_s=f.opt_int(d, "allowance_s", prefix),
        )


@dataclass(frozen=True)
class PermissionEntry:
    """One badge allowed on the machine, at a level, until `expires_at` (epoch s) if set.

    `prepaid` is set for a member of a prepaid category (omitted from the payload
    otherwise, so entries without it are byte-for-byte what they were before).
    """

    badge_digest: str
    member_id: str
    level: Level
    expires_at: int | None = None
    # The badge carries the anti-cloning sector: a read without a valid one is denied.
    # Omitted from the payload when False (a plain badge).
    protected: bool = False
    prepaid: Prepaid | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "badge_digest": self.badge_digest,
            "member_id": self.member_id,
            "level": self.level.value,
            "expires_at": self.expires_at,
        }
        if self.protected:
            d["protected"] = True
        if self.prepaid is not None:
            d["prepaid"] = self.prepaid.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, prefix: str) -> PermissionEntry:
        if not isinstance(d, dict):
            raise ProtocolError(prefix.rstrip("."), "must be an object")
        return cls(
            badge_digest=f.req_str(d, "badge_digest", prefix, max_len=64),
            member_id=f.req_str(d, "member_id", prefix, max_len=64),
            level=f.req_enum(d, "level", Level, prefix),
            expires_at=f.opt_int(d, "expires_at", prefix),
            protected=_opt_bool(d, "protected", prefix, default=False),
            prepaid=(
                None
                if d.get("prepaid") is None
                else Prepaid.from_dict(d["prepaid"], f"{prefix}prepaid.")
            ),
        )


@dataclass(frozen=True)
class StaffEntry:
    """A badge with staff roles on this machine (supervisor, manager), until `expires_at`."""

    badge_digest: str
    member_id: str
    roles: tuple[StaffRole, ...]
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "badge_digest": self.badge_digest,
            "member_id": self.member_id,
            "roles": [r.value for r in self.roles],
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: Any, prefix: str) -> StaffEntry:
        if not isinstance(d, dict):
            raise ProtocolError(prefix.rstrip("."), "must be an object")
        raw_roles = f.req_list(d, "roles", prefix)
        roles = []
        for i, value in enumerate(raw_roles):
            try:
                roles.append(StaffRole(value))
            except ValueError:
                allowed = ", ".join(r.value for r in StaffRole)
                raise ProtocolError(f"{prefix}roles[{i}]", f"must be one of: {allowed}") from None
        return cls(
            badge_digest=f.req_str(d, "badge_digest", prefix, max_len=64),
            member_id=f.req_str(d, "member_id", prefix, max_len=64),
            roles=tuple(roles),
            expires_at=f.opt_int(d, "expires_at", prefix),
        )

    def has(self, role: StaffRole, wall: float) -> bool:
        """True if this badge holds `role` at wall time `wall`."""
        return role in self.roles and (self.expires_at is None or wall < self.expires_at)


@dataclass(frozen=True)
class PermissionSnapshot:
    """Who may use one machine, at what level, and the machine's settings, at `version`."""

    site: str
    machine: str
    controller_id: str
    version: int
    issued_at: int
    settings: MachineSettings
    permissions: tuple[PermissionEntry, ...] = ()
    # Staff badges (supervisors, managers) of this machine; omitted from the payload
    # when empty. A badge may be in both lists.
    staff: tuple[StaffEntry, ...] = ()
    _by_digest: dict[str, PermissionEntry] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _staff_by_digest: dict[str, StaffEntry] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._by_digest.update({p.badge_digest: p for p in self.permissions})
        self._staff_by_digest.update({s.badge_digest: s for s in self.staff})

    def lookup(self, digest: str) -> PermissionEntry | None:
        """The entry for a badge digest, if the badge is on this snapshot."""
        return self._by_digest.get(digest)

    def lookup_staff(self, digest: str) -> StaffEntry | None:
        """The staff entry for a badge digest, if the badge has staff roles here."""
        return self._staff_by_digest.get(digest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "machine": self.machine,
            "controller_id": self.controller_id,
            "version": self.version,
            "issued_at": self.issued_at,
            "settings": self.settings.to_dict(),
            "permissions": [p.to_dict() for p in self.permissions],
            **({"staff": [s.to_dict() for s in self.staff]} if self.staff else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PermissionSnapshot:
        p = "snapshot."
        entries = f.req_list(d, "permissions", p)
        staff = f.req_list(d, "staff", p) if d.get("staff") is not None else []
        return cls(
            site=f.req_str(d, "site", p, max_len=64),
            machine=f.req_str(d, "machine", p, max_len=64),
            controller_id=f.req_str(d, "controller_id", p, max_len=64),
            version=f.req_int(d, "version", p, minimum=1),
            issued_at=f.req_int(d, "issued_at", p),
            settings=MachineSettings.from_dict(f.req_object(d, "settings", p), p + "settings."),
            permissions=tuple(
                PermissionEntry.from_dict(e, f"{p}permissions[{i}].") for i, e in enumerate(entries)
            ),
            staff=tuple(StaffEntry.from_dict(e, f"{p}staff[{i}].") for i, e in enumerate(staff)),
        )


def _signature(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, f.canonical(body), hashlib.sha256).hexdigest()


def encode_config(snapshot: PermissionSnapshot, key: bytes) -> bytes:
    """The signed `config` payload for a snapshot."""
    body = snapshot.to_dict()
    return f.dump(
        {"schema_version": SCHEMA_VERSION, "snapshot": body, "signature": _signature(key, body)}
    )


def verify_config(
    payload: bytes | str, key: bytes, *, held_version: int | None = None
) -> PermissionSnapshot:
    """Decode and verify a `config` payload.

    Raises SignatureError for a wrong signature, StaleSnapshotError when the version is
    not newer than `held_version`, ProtocolError for a malformed body.
    """
    d = f.load_object(payload, "config")
    f.check_schema_version(d, SCHEMA_VERSION)
    body = f.req_object(d, "snapshot")
    signature = f.req_str(d, "signature", max_len=128)
    if not hmac.compare_digest(signature, _signature(key, body)):
        raise SignatureError("signature", "does not match the controller key")
    snapshot = PermissionSnapshot.from_dict(body)
    if held_version is not None and snapshot.version <= held_version:
        raise StaleSnapshotError(
            "snapshot.version", f"{snapshot.version} is not newer than held {held_version}"
        )
    return snapshot
