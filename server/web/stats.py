"""Statistics for managers (charts) and the public open-data page and files."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from server.adapters.web_queries import sessions_between, trainings_granted_between
from server.api.deps import RuntimeDep, UowDep
from server.bootstrap import ServerRuntime
from server.domain.utilisation import (
    Span,
    TrainingCount,
    anonymised,
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


def _licence(runtime: ServerRuntime) -> tuple[str, str, str]:
    code = runtime.settings.open_data_licence
    name, url = LICENCES.get(code, (code, ""))
    return code, name, url


@router.get("/open-data", response_class=HTMLResponse)
def open_data_page(
    request: Request, uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12
) -> HTMLResponse:
    """Public: anonymised utilisation per machine and week, with its licence."""
    cells = _open_cells(uow, runtime, weeks)
    names = {m.id: m.name for m in uow.machines.all()}
    fmt: Formatter = page_context(request)["fmt"]
    totals: dict[str, float] = {}
    for cell in cells:
        if cell.hours is not None:
            totals[names.get(cell.machine_id, cell.machine_id)] = (
                totals.get(names.get(cell.machine_id, cell.machine_id), 0.0) + cell.hours
            )
    code, licence_name, licence_url = _licence(runtime)
    context = {
        "cells": cells, "names": names, "weeks": weeks,
        "min_members": runtime.settings.open_data_min_members,
        "chart": charts.column_chart(sorted(totals.items()), fmt.axis),
        "licence_code": code, "licence_name": licence_name, "licence_url": licence_url,
        "trainings": _training_counts(uow, runtime, weeks),
        "type_names": {t.id: t.name for t in uow.training_types.all()},
    }  # fmt: skip
    return render(request, "open_data.html", context)


def _records(cells: list[Any], names: dict[str, str]) -> list[dict[str, Any]]:
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
        for c in cells
    ]


@router.get("/open-data.json")
def open_data_json(uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12) -> JSONResponse:
    code, name, url = _licence(runtime)
    names = {m.id: m.name for m in uow.machines.all()}
    body = {
        "licence": {"id": code, "name": name, "url": url},
        "site": runtime.settings.site,
        "min_members_per_cell": runtime.settings.open_data_min_members,
        "cells": _records(_open_cells(uow, runtime, weeks), names),
        "trainings_granted": [
            {"month": c.month.isoformat()[:7], "training_type_id": c.training_type_id,
             "granted": c.granted, "suppressed": c.granted is None}
            for c in _training_counts(uow, runtime, weeks)
        ],
    }
    return JSONResponse(body)


@router.get("/open-data.csv")
def open_data_csv(uow: UowDep, runtime: RuntimeDep, weeks: Weeks = 12) -> Response:
    code, _, _ = _licence(runtime)
    names = {m.id: m.name for m in uow.machines.all()}
    out = io.StringIO()
    columns = ["week", "machine_id", "machine", "hours", "busy_hours", "sessions", "members",
               "suppressed"]  # fmt: skip
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for record in _records(_open_cells(uow, runtime, weeks), names):
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    headers = {
        "Content-Disposition": f'attachment; filename="{runtime.settings.site}-utilisation.csv"',
        "Link": f'<{_licence(runtime)[2]}>; rel="license"',
        "X-Licence": code,
    }
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
