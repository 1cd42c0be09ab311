"""When a training lapses: N months after its last real use (or its grant)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from protocol import Level
from server.domain.access import LEVEL_RANK


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def lapses_at(
    *, granted_at: datetime, last_used_at: datetime | None, lapse_months: int | None
) -> datetime | None:
    """When the training lapses for disuse, or None if its type never lapses."""
    if lapse_months is None:
        return None
    since = max(granted_at, last_used_at) if last_used_at else granted_at
    return add_months(since, lapse_months)


def is_live(
    *,
    now: datetime,
    expires_at: datetime | None,
    revoked_at: datetime | None,
    lapse_at: datetime | None,
) -> bool:
    """A training counts while not revoked, not expired and not lapsed."""
    if revoked_at is not None and revoked_at <= now:
        return False
    if expires_at is not None and expires_at <= now:
        return False
    return lapse_at is None or lapse_at > now


@dataclass(frozen=True)
class TrainingView:
    """What the permission rule needs of one training row."""

    member_id: str
    training_type_id: str
    level: Level
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    lapse_months: int | None


@dataclass(frozen=True)
class Permission:
    level: Level
    expires_at: datetime | None


def effective_permissions(
    trainings: list[TrainingView],
    last_used: dict[tuple[str, str], datetime],
    now: datetime,
) -> dict[str, Permission]:
    """Per member, the highest level among live trainings (latest expiry among equals).

    `last_used` maps (member, training type) to the start of their latest session on
    any machine of that type: disuse makes a training lapse.
    """
    best: dict[str, Permission] = {}
    for t in trainings:
        lapse = lapses_at(
            granted_at=t.granted_at,
            last_used_at=last_used.get((t.member_id, t.training_type_id)),
            lapse_months=t.lapse_months,
        )
        if not is_live(now=now, expires_at=t.expires_at, revoked_at=t.revoked_at, lapse_at=lapse):
            continue
        ends = min((d for d in (t.expires_at, lapse) if d is not None), default=None)
        candidate = Permission(t.level, ends)
        held = best.get(t.member_id)
        if held is None or _better(candidate, held):
            best[t.member_id] = candidate
    return best


def _better(a: Permission, b: Permission) -> bool:
    if LEVEL_RANK[a.level] != LEVEL_RANK[b.level]:
        return LEVEL_RANK[a.level] > LEVEL_RANK[b.level]
    if a.expires_at is None:
        return b.expires_at is not None
    return b.expires_at is not None and a.expires_at > b.expires_at


def live_types_at_level(
    trainings: list[TrainingView],
    last_used: dict[tuple[str, str], datetime],
    now: datetime,
    level: Level,
) -> set[str]:
    """Training types in which a live training (not revoked, expired or lapsed) has `level`."""
    live: set[str] = set()
    for t in trainings:
        if t.level is not level:
            continue
        lapse = lapses_at(
            granted_at=t.granted_at,
            last_used_at=last_used.get((t.member_id, t.training_type_id)),
            lapse_months=t.lapse_months,
        )
        if is_live(now=now, expires_at=t.expires_at, revoked_at=t.revoked_at, lapse_at=lapse):
            live.add(t.training_type_id)
    return live
