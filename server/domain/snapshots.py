"""Building a machine's permission snapshot from who holds which training."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from protocol import (
    Level,
    MachineSettings,
    PermissionEntry,
    PermissionSnapshot,
    Prepaid,
    StaffEntry,
    StaffRole,
    badge_digest,
)
from protocol._fields import canonical


@dataclass(frozen=True)
class BadgeGrant:
    """An active badge of a member holding a live training on the machine."""

    badge_uid: str
    member_id: str
    level: Level
    expires_at: datetime | None
    protected: bool = False  # the badge carries the anti-cloning sector
    prepaid: Prepaid | None = None  # a prepaid member: may they start, for how long


@dataclass(frozen=True)
class StaffGrant:
    """An active badge with staff roles on the machine (supervisor, manager)."""

    badge_uid: str
    member_id: str
    roles: tuple[StaffRole, ...]
    expires_at: datetime | None = None


@dataclass(frozen=True)
class PublishedVersion:
    """What was last published for a machine."""

    version: int
    issued_at: int
    content_digest: str | None


def build_snapshot(
    *,
    site: str,
    machine_id: str,
    controller_id: str,
    key: bytes,
    settings: MachineSettings,
    grants: Iterable[BadgeGrant],
    previous: PublishedVersion,
    now: datetime,
    staff: Iterable[StaffGrant] = (),
    reissue_older_than_s: float | None = None,
) -> tuple[PermissionSnapshot, str]:
    """The snapshot to publish and its content digest.

    Unchanged content keeps the previous version (republishing it is harmless), unless
    it was issued `reissue_older_than_s` or more before `now`; a change, or such a
    reissue, gets a fresh `issued_at` and a version above both the previous one and the
    current epoch second, so versions keep increasing even if the database is restored
    from a backup.
    """
    entries = sorted(
        (
            PermissionEntry(
                badge_digest=badge_digest(key, g.badge_uid),
                member_id=g.member_id,
                level=g.level,
                expires_at=None if g.expires_at is None else int(g.expires_at.timestamp()),
                protected=g.protected,
                prepaid=g.prepaid,
            )
            for g in grants
        ),
        key=lambda e: e.badge_digest,
    )
    staff_entries = sorted(
        (
            StaffEntry(
                badge_digest=badge_digest(key, g.badge_uid),
                member_id=g.member_id,
                roles=tuple(sorted(g.roles)),
                expires_at=None if g.expires_at is None else int(g.expires_at.timestamp()),
            )
            for g in staff
        ),
        key=lambda e: e.badge_digest,
    )
    draft = PermissionSnapshot(
        site=site,
        machine=machine_id,
        controller_id=controller_id,
        version=1,
        issued_at=0,
        settings=settings,
        permissions=tuple(entries),
        staff=tuple(staff_entries),
    )
    content = draft.to_dict()
    del content["version"], content["issued_at"]
    digest = hashlib.sha256(canonical(content)).hexdigest()
    now_s = int(now.timestamp())
    unchanged = digest == previous.content_digest and previous.version > 0
    too_old = reissue_older_than_s is not None and (
        now_s - previous.issued_at >= reissue_older_than_s
    )
    if unchanged and not too_old:
        return replace(draft, version=previous.version, issued_at=previous.issued_at), digest
    return replace(draft, version=max(previous.version + 1, now_s), issued_at=now_s), digest
