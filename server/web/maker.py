"""My space: my sessions by month, my trainings, report a problem, my data, API tokens."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.adapters.web_queries import sessions_between
from server.api.deps import RuntimeDep, UowDep
from server.api.routes.trainings import _trainings_public
from server.domain.errors import DomainError
from server.service_layer import commands as cmds
from server.service_layer.accounts import NewApiToken
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from server.web.error_messages import form_error
from server.web.i18n import tr
from server.web.labels import ALL as LABELS
from server.web.session import FormUser, LoggedIn
from server.web.templating import render

router = APIRouter(include_in_schema=False)

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_bounds(month: str | None, timezone: str, today: date) -> tuple[date, datetime, datetime]:
    """The month (first day) and its [start, end) in UTC, from 'YYYY-MM' in the lab's zone."""
    found = MONTH.match(month or "")
    first = date(int(found[1]), int(found[2]), 1) if found else today.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    zone = ZoneInfo(timezone)
    start = datetime(first.year, first.month, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(following.year, following.month, 1, tzinfo=zone).astimezone(UTC)
    return first, start, end


def _shift(first: date, months: int) -> str:
    index = first.year * 12 + first.month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def my_trainings(uow: SqlAlchemyUnitOfWork, member_id: str) -> list[Any]:
    rows, _ = uow.trainings.page(member_id=member_id, limit=200)
    return _trainings_public(uow, list(rows))


def type_names(uow: SqlAlchemyUnitOfWork) -> dict[str, str]:
    return {t.id: t.name for t in uow.training_types.all()}


def machine_names(uow: SqlAlchemyUnitOfWork) -> dict[str, str]:
    return {m.id: m.name for m in uow.machines.all()}


@router.get("/me", response_class=HTMLResponse)
def my_space(request: Request, uow: UowDep, runtime: RuntimeDep, user: LoggedIn) -> HTMLResponse:
    """My trainings (level, when they lapse) and this month's sessions."""
    tz = runtime.settings.timezone
    first, start, end = month_bounds(None, tz, datetime.now(ZoneInfo(tz)).date())
    sessions = sessions_between(uow.session, start, end, member_id=user.member_id)
    context = {
        "trainings": my_trainings(uow, user.member_id),
        "type_names": type_names(uow),
        "month": first,
        "session_count": len(sessions),
        "elapsed": sum(s.elapsed_seconds for s in sessions),
        "busy": sum(s.busy_seconds for s in sessions),
        **LABELS,
    }
    return render(request, "me.html", context)


@router.get("/me/sessions", response_class=HTMLResponse)
def my_sessions(
    request: Request,
    uow: UowDep,
    runtime: RuntimeDep,
    user: LoggedIn,
    month: Annotated[str | None, Query(max_length=7)] = None,
) -> HTMLResponse:
    """My sessions of one month (this month unless `month=YYYY-MM`)."""
    tz = runtime.settings.timezone
    first, start, end = month_bounds(month, tz, datetime.now(ZoneInfo(tz)).date())
    sessions = sessions_between(uow.session, start, end, member_id=user.member_id)
    context = {
        "sessions": sessions,
        "month": first,
        "month_value": _shift(first, 0),
        "previous": _shift(first, -1),
        "next": _shift(first, 1),
        "machine_names": machine_names(uow),
        "elapsed": sum(s.elapsed_seconds for s in sessions),
        "busy": sum(s.busy_seconds for s in sessions),
        **LABELS,
    }
    return render(request, "my_sessions.html", context)


def _tokens_context(uow: SqlAlchemyUnitOfWork, user: LoggedIn, **extra: Any) -> dict[str, Any]:
    tokens = uow.credentials.api_tokens_of(user.member_id)
    return {"tokens": tokens, "new_token": None, "errors": {}, **extra}


@router.get("/me/tokens", response_class=HTMLResponse)
def my_tokens(request: Request, uow: UowDep, user: LoggedIn) -> HTMLResponse:
    return render(request, "tokens.html", _tokens_context(uow, user))


@router.post("/me/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: FormUser,
    name: Annotated[str, Form(max_length=100)] = "",
) -> HTMLResponse:
    """A new personal API token, shown once on this page."""
    if not name.strip():
        errors = {"name": tr(request, "Give the token a name.")}
        return render(request, "tokens.html", _tokens_context(uow, user, errors=errors), 400)
    try:
        created: NewApiToken = runtime.bus.handle(
            cmds.CreateApiToken(user.member_id, name.strip(), actor=user.principal)
        )
    except DomainError as exc:
        errors = {"name": form_error(request, exc)}
        return render(request, "tokens.html", _tokens_context(uow, user, errors=errors), 400)
    uow.session.expire_all()
    return render(request, "tokens.html", _tokens_context(uow, user, new_token=created))


@router.post("/me/tokens/{token_id}/revoke")
def revoke_token(token_id: int, runtime: RuntimeDep, user: FormUser) -> Response:
    runtime.bus.handle(cmds.RevokeApiToken(user.member_id, token_id, actor=user.principal))
    return RedirectResponse("/me/tokens", status_code=303)


@router.get("/report", response_class=HTMLResponse)
def report_page(
    request: Request,
    uow: UowDep,
    user: LoggedIn,
    machine: Annotated[str | None, Query(max_length=63)] = None,
    done: str = "",
) -> HTMLResponse:
    context: dict[str, Any] = {
        "machines": uow.machines.all(), "selected": machine, "done": bool(done),
        "errors": {}, "text": "",
    }  # fmt: skip
    return render(request, "report.html", context)


@router.post("/report", response_class=HTMLResponse)
def report_submit(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: FormUser,
    machine: Annotated[str, Form(max_length=63)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Tell the managers what is wrong with a machine (kept on the machine's page)."""
    errors: dict[str, str] = {}
    if uow.machines.get(machine) is None:
        errors["machine"] = tr(request, "Choose the machine.")
    if not text.strip():
        errors["text"] = tr(request, "Describe the problem.")
    if not errors:
        runtime.bus.handle(cmds.ReportProblem(machine, text, actor=user.principal))
        return RedirectResponse(f"/report?done=1&machine={machine}", status_code=303)
    context = {"machines": uow.machines.all(), "selected": machine, "done": False,
               "errors": errors, "text": text}  # fmt: skip
    return render(request, "report.html", context, status_code=400)
