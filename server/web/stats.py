"""Statistics for managers (charts) and the public open-data page and files."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from server.adapters.web_queries import (
    contributions_between,
    sessions_between,
    trainings_granted_between,
)
from server.api.deps import RuntimeDep, UowDep
from server.bootstrap import ServerRuntime
from server.domain.utilisation import (
    ContributionCell,
    Span,
    TrainingCount,
    anonymised,
    contributions_per_month,
    heatmap,
    per_machine,
    trainings_per_month,
    weekly,
)
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from server.web import charts
from server.web.i18n import Formatter
from server.web.session import ManagerUser
from server.web.templating import page_context, render

router = APIRouter(include_in_schema=False)

Weeks = Annotated[int, Query(ge=1, le=104)]
LICENCES = {
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International (CC BY 4.0)",
                  "https://creativecommons.org/licenses/by/4.0/"),
    "ODbL-1.0": ("Open Database License (ODbL) 1.0",
                 "https://opendatacommons.org/licenses/odbl/1-0/"),
    "CC0-1.0": ("Creative Commons Zero 1.0 (public domain dedication)",
                "https://creativecommons.org/publicdomain/zero/1.0/"),
}  # fmt: skip


def _spans(uow: SqlAlchemyUnitOfWork, start: datetime, end: datetime) -> list[Span]:
    now = datetime.now(UTC)
    spans = []
    for s in sessions_between(uow.session, start, end):
        unlocked = s.elapsed_seconds if s.ended_at else (now - s.started_at).total_seconds()
        spans.append(Span(s.machine_id, s.member_id, s.started_at, max(unlocked, 0.0),
                          s.busy_seconds))  # fmt: skip
    return spans


def _period(runtime: ServerRuntime, weeks: int) -> tuple[list[date], datetime, datetime]:
    """The last `weeks` weeks (Mondays, lab time), this one included, and [start, end)."""
    tz = ZoneInfo(runtime.settings.timezone)
    today = datetime.now(tz).date()
    monday = today - timedelta(days=today.weekday())
    mondays = [monday - timedelta(weeks=i) for i in range(weeks - 1, -1, -1)]
    start = datetime(mondays[0].year, mondays[0].month, mondays[0].day, tzinfo=tz)
    return mondays, start.astimezone(UTC), datetime.now(UTC) + timedelta(seconds=1)


@router.get("/stats", response_class=HTMLResponse)
def stats_page(
    request: Request, uow: UowDep, runtime: RuntimeDep, user: ManagerUser, weeks: Weeks = 12
) -> HTMLResponse:
    """Utilisation per week, hour x weekday heatmap, busy vs unlocked per machine."""
    mondays, start, end = _period(runtime, weeks)
    tz = ZoneInfo(runtime.settings.timezone)
    spans = _spans(uow, start, end)
    fmt: Formatter = page_context(request)["fmt"]
    cells = weekly(spans, tz)
    per_week = [(fmt.day_month(m), sum(c.unlocked_s for (_, w), c in cells.items()
                 if w == m) / 3600) for m in mondays]  # fmt: skip
    names = {m.id: m.name for m in uow.machines.all()}
    machines = per_machine(spans)
    rows = [(names.get(mid, mid), u, b) for mid, (u, b) in sorted(machines.items(),
            key=lambda kv: names.get(kv[0], kv[0]))]  # fmt: skip
    grid = heatmap(spans, tz)
    context: dict[str, Any] = {
        "weeks": weeks,
        "week_chart": charts.column_chart(per_week, fmt.axis),
        "per_week": per_week,
        "machine_chart": charts.paired_bars(rows, fmt.axis),
        "machine_rows": rows,
        "heat": charts.heat_cells(grid),
        "grid": grid,
    }
    return render(request, "stats.html", context)


def _open_cells(uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int) -> list[Any]:
    _, start, end = _period(runtime, weeks)
    tz = ZoneInfo(runtime.settings.timezone)
    return anonymised(weekly(_spans(uow, start, end), tz), runtime.settings.open_data_min_members)


def _training_counts(
    uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int
) -> list[TrainingCount]:
    _, start, end = _period(runtime, weeks)
    grants = trainings_granted_between(uow.session, start, end)
    tz = ZoneInfo(runtime.settings.timezone)
    return trainings_per_month(grants, tz, runtime.settings.open_data_min_members)


def _contribution_cells(
    uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int
) -> list[ContributionCell]:
    _, start, end = _period(runtime, weeks)
    found = contributions_between(uow.session, start, end)
    tz = ZoneInfo(runtime.settings.timezone)
    return contributions_per_month(found, tz, runtime.settings.open_data_min_members)


def _licence(runtime: ServerRuntime) -> tuple[str, str, str]:
    code = runtime.settings.open_data_licence
    name, url = LICENCES.get(code, (code, ""))
    return code, name, url


def _published_totals(rows: list[tuple[str, float | None]]) -> list[tuple[str, float]]:
    """Hours per name over the published cells (suppressed cells add nothing), by name."""
    totals: dict[str, float] = {}
    for name, hours in rows:
        if hours is not None:
            totals[name] = totals.get(name, 0.0) + hours
    return sorted(totals.items())


@router.get("/open-data", response_class=HTMLResponse)
def open_data_page(
    request: Request, uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12
) -> HTMLResponse:
    """Public: anonymised utilisation per machine and week, trainings given and
    contribution hours per month, with their licence."""
    cells = _open_cells(uow, runtime, weeks)
    contributions = _contribution_cells(uow, runtime, weeks)
    names = {m.id: m.name for m in uow.machines.all()}
    kinds = {t.id: t.name for t in uow.billing.contribution_types()}
    fmt: Formatter = page_context(request)["fmt"]
    machine_hours = _published_totals([(names.get(c.machine_id, c.machine_id), c.hours)
                                       for c in cells])  # fmt: skip
    given_hours = _published_totals(
        [(kinds.get(c.contribution_type_id, c.contribution_type_id), c.hours)
         for c in contributions]
    )  # fmt: skip
    code, licence_name, licence_url = _licence(runtime)
    context = {
        "cells": cells, "names": names, "weeks": weeks,
        "min_members": runtime.settings.open_data_min_members,
        "chart": charts.column_chart(machine_hours, fmt.axis),
        "licence_code": code, "licence_name": licence_name, "licence_url": licence_url,
        "trainings": _training_counts(uow, runtime, weeks),
        "type_names": {t.id: t.name for t in uow.training_types.all()},
        "contributions": contributions, "contribution_names": kinds,
        "contribution_chart": charts.column_chart(given_hours, fmt.axis),
        "tables": tuple(TABLES),
    }  # fmt: skip
    return render(request, "open_data.html", context)


def _utilisation_records(
    uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int
) -> list[dict[str, Any]]:
    names = {m.id: m.name for m in uow.machines.all()}
    return [
        {
            "week": c.week.isoformat(),
            "machine_id": c.machine_id,
            "machine": names.get(c.machine_id, c.machine_id),
            "hours": c.hours,
            "busy_hours": c.busy_hours,
            "sessions": c.sessions,
            "members": c.members,
            "suppressed": c.suppressed,
        }
        for c in _open_cells(uow, runtime, weeks)
    ]


def _training_records(
    uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int
) -> list[dict[str, Any]]:
    return [
        {"month": c.month.isoformat()[:7], "training_type_id": c.training_type_id,
         "granted": c.granted, "suppressed": c.granted is None}
        for c in _training_counts(uow, runtime, weeks)
    ]  # fmt: skip


def _contribution_records(
    uow: SqlAlchemyUnitOfWork, runtime: ServerRuntime, weeks: int
) -> list[dict[str, Any]]:
    names = {t.id: t.name for t in uow.billing.contribution_types()}
    return [
        {
            "month": c.month.isoformat()[:7],
            "contribution_type_id": c.contribution_type_id,
            "contribution_type": names.get(c.contribution_type_id, c.contribution_type_id),
            "hours": c.hours,
            "contributions": c.contributions,
            "members": c.members,
            "suppressed": c.suppressed,
        }
        for c in _contribution_cells(uow, runtime, weeks)
    ]


Records = Callable[[SqlAlchemyUnitOfWork, ServerRuntime, int], list[dict[str, Any]]]
# The published tables: name -> (CSV columns, records). The CSV gives one table a file.
TABLES: dict[str, tuple[tuple[str, ...], Records]] = {
    "utilisation": (("week", "machine_id", "machine", "hours", "busy_hours", "sessions",
                     "members", "suppressed"), _utilisation_records),
    "trainings": (("month", "training_type_id", "granted", "suppressed"), _training_records),
    "contributions": (("month", "contribution_type_id", "contribution_type", "hours",
                       "contributions", "members", "suppressed"), _contribution_records),
}  # fmt: skip
Table = Annotated[Literal["utilisation", "trainings", "contributions"], Query()]


@router.get("/open-data.json")
def open_data_json(uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12) -> JSONResponse:
    """Every published table, with the licence and the suppression threshold."""
    code, name, url = _licence(runtime)
    body = {
        "licence": {"id": code, "name": name, "url": url},
        "site": runtime.settings.site,
        "min_members_per_cell": runtime.settings.open_data_min_members,
        "cells": _utilisation_records(uow, runtime, weeks),
        "trainings_granted": _training_records(uow, runtime, weeks),
        "contributions": _contribution_records(uow, runtime, weeks),
    }
    return JSONResponse(body)


@router.get("/open-data.csv")
def open_data_csv(
    uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12, table: Table = "utilisation"
) -> Response:
    """One published table as CSV (utilisation per machine and week unless told)."""
    code, _, licence_url = _licence(runtime)
    columns, records = TABLES[table]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for record in records(uow, runtime, weeks):
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    name = runtime.settings.site + ("-utilisation" if table == "utilisation" else f"-{table}")
    headers = {
        "Content-Disposition": f'attachment; filename="{name}.csv"',
        "Link": f'<{licence_url}>; rel="license"',
        "X-Licence": code,
    }
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
