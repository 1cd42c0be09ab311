"""Utilisation figures from sessions: per machine and week, hour x weekday, busy vs
unlocked; and the small-cell suppression that keeps open data anonymous."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Span:
    """One session as the figures need it (end = start + unlocked time)."""

    machine_id: str
    member_id: str | None
    start: datetime
    unlocked_s: float
    busy_s: float

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.unlocked_s)


@dataclass
class WeekCell:
    """One machine's week: unlocked hours, sessions, and who used it (not published)."""

    unlocked_s: float = 0.0
    busy_s: float = 0.0
    sessions: int = 0
    members: set[str] = field(default_factory=set)


def week_of(moment: datetime, tz: ZoneInfo) -> date:
    """The Monday of the moment's week, in the lab's time zone."""
    local = moment.astimezone(tz).date()
    return local - timedelta(days=local.weekday())


def weekly(spans: list[Span], tz: ZoneInfo) -> dict[tuple[str, date], WeekCell]:
    """Per (machine, week of the session's start): totals and distinct members."""
    cells: dict[tuple[str, date], WeekCell] = defaultdict(WeekCell)
    for span in spans:
        cell = cells[(span.machine_id, week_of(span.start, tz))]
        cell.unlocked_s += span.unlocked_s
        cell.busy_s += span.busy_s
        cell.sessions += 1
        if span.member_id:
            cell.members.add(span.member_id)
    return dict(cells)


def heatmap(spans: list[Span], tz: ZoneInfo) -> list[list[float]]:
    """Unlocked hours falling in each [weekday 0=Monday][hour 0-23] of the lab's clock."""
    grid = [[0.0] * 24 for _ in range(7)]
    for span in spans:
        cursor, end = span.start, span.end
        while cursor < end:
            local = cursor.astimezone(tz)
            hour_end = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            step_end = min(end, hour_end.astimezone(cursor.tzinfo))
            grid[local.weekday()][local.hour] += (step_end - cursor).total_seconds() / 3600
            cursor = step_end
    return grid


def per_machine(spans: list[Span]) -> dict[str, tuple[float, float]]:
    """machine -> (unlocked hours, busy hours)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for span in spans:
        totals[span.machine_id][0] += span.unlocked_s / 3600
        totals[span.machine_id][1] += span.busy_s / 3600
    return {machine: (u, b) for machine, (u, b) in totals.items()}


@dataclass(frozen=True)
class OpenCell:
    """A published cell: None everywhere when fewer members than the threshold used it."""

    machine_id: str
    week: date
    hours: float | None
    busy_hours: float | None
    sessions: int | None
    members: int | None

    @property
    def suppressed(self) -> bool:
        return self.members is None


def anonymised(cells: dict[tuple[str, date], WeekCell], min_members: int) -> list[OpenCell]:
    """Cells with at least `min_members` distinct members, the others emptied, so that no
    figure can be traced to one member (counts below the threshold are not published)."""
    result = []
    for (machine_id, week), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if len(cell.members) < min_members:
            result.append(OpenCell(machine_id, week, None, None, None, None))
        else:
            result.append(
                OpenCell(
                    machine_id, week, round(cell.unlocked_s / 3600, 1),
                    round(cell.busy_s / 3600, 1), cell.sessions, len(cell.members),
                )
            )  # fmt: skip
    return result


@dataclass(frozen=True)
class TrainingCount:
    """Trainings of a type granted in a month; None when below the publication threshold."""

    training_type_id: str
    month: date
    granted: int | None


def trainings_per_month(
    grants: list[tuple[str, datetime]], tz: ZoneInfo, min_count: int
) -> list[TrainingCount]:
    """Per (training type, month of the lab's calendar), the number granted; counts below
    `min_count` are not published (a single grant would point at one member)."""
    counts: dict[tuple[str, date], int] = defaultdict(int)
    for type_id, granted_at in grants:
        local = granted_at.astimezone(tz).date()
        counts[(type_id, local.replace(day=1))] += 1
    return [
        TrainingCount(type_id, month, n if n >= min_count else None)
        for (type_id, month), n in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


@dataclass(frozen=True)
class Contribution:
    """One credited contribution as the open data needs it (minutes: 0 for items)."""

    contribution_type_id: str
    member_id: str
    at: datetime
    minutes: int


@dataclass(frozen=True)
class ContributionCell:
    """A contribution type's month: hours given, contributions and distinct members;
    None everywhere when fewer members than the threshold contributed."""

    contribution_type_id: str
    month: date
    hours: float | None
    contributions: int | None
    members: int | None

    @property
    def suppressed(self) -> bool:
        return self.members is None


def contributions_per_month(
    contributions: list[Contribution], tz: ZoneInfo, min_members: int
) -> list[ContributionCell]:
    """Per (contribution type, month of the lab's calendar): hours given, contributions
    and distinct members; a cell with fewer than `min_members` distinct members is
    emptied, like the utilisation cells, so that no figure points at one member."""
    minutes: dict[tuple[str, date], int] = defaultdict(int)
    counts: dict[tuple[str, date], int] = defaultdict(int)
    members: dict[tuple[str, date], set[str]] = defaultdict(set)
    for c in contributions:
        key = (c.contribution_type_id, c.at.astimezone(tz).date().replace(day=1))
        minutes[key] += c.minutes
        counts[key] += 1
        members[key].add(c.member_id)
    result = []
    for key in sorted(counts, key=lambda k: (k[1], k[0])):
        type_id, month = key
        if len(members[key]) < min_members:
            result.append(ContributionCell(type_id, month, None, None, None))
        else:
            result.append(ContributionCell(type_id, month, round(minutes[key] / 60, 1),
                                           counts[key], len(members[key])))  # fmt: skip
    return result
