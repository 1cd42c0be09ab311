"""Manager pages: members (search, invitations, CSV import, badges, enrollment),
machines (settings, service, controller, commands, reports) and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from protocol import Mode
from server.adapters.orm import utcnow
from server.adapters.web_queries import recent_faults
from server.api.deps import RuntimeDep, UowDep
from server.api.routes.machines import _machine_public, list_commands, machines_public
from server.domain.access import Role
from server.domain.errors import ConflictError, DomainError
from server.service_layer import commands as cmds
from server.service_layer.account_links import IssuedLink
from server.service_layer.imports import MAX_BYTES, ImportFormatError, ImportReport, import_members
from server.web.accounts import link_url, send_link_mail
from server.web.error_messages import form_error, refusal_text
from server.web.i18n import tr
from server.web.labels import ALL as LABELS
from server.web.maker import type_names
from server.web.session import FormUser, LoggedIn, ManagerUser, WebUser, need
from server.web.templating import render
from server.web.trainer import grantable_levels, trainer_member_context

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
Search = Annotated[str, Query(max_length=100)]


# -- members --------------------------------------------------------------------------------


@router.get("/members", response_class=HTMLResponse)
def members(
    request: Request,
    uow: UowDep,
    user: ManagerUser,
    q: Search = "",
    category: Annotated[str, Query(max_length=40)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Members by name: search on name or email, filter by category."""
    rows, total = uow.members.page(
        search=q or None, category=category or None, limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )  # fmt: skip
    shown = [m for m in rows if m.erased_at is None]
    links = uow.account_links.latest_of({m.id for m in shown})
    trainings: dict[str, list[Any]] = {m.id: [] for m in shown}
    for view in uow.trainings.views(member_ids=set(trainings)):
        trainings[view.member_id].append(view)
    context = {
        "members": shown, "total": total, "q": q, "category": category, "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)), "categories": uow.categories.all(),
        "badges": {m.id: len(uow.badges.of_member(m.id)) for m in shown}, "links": links,
        "now": utcnow(), "trainings": trainings, "type_names": type_names(uow), **LABELS,
    }  # fmt: skip
    return render(request, "members.html", context)


def _new_member_context(uow: Any, **extra: Any) -> dict[str, Any]:
    return {"categories": uow.categories.all(), "errors": {}, "values": {}, **extra}


@router.get("/members/new", response_class=HTMLResponse)
def new_member(request: Request, uow: UowDep, user: ManagerUser) -> HTMLResponse:
    return render(request, "member_new.html", _new_member_context(uow))


def invite(
    request: Request, runtime: Any, user: WebUser, member_id: str
) -> tuple[IssuedLink, bool]:
    """A fresh one-time set-password link; e-mailed when SMTP is configured."""
    issued: IssuedLink = runtime.bus.handle(
        cmds.IssueAccountLink(
            member_id, "invite", valid_hours=runtime.settings.account_link_hours,
            actor=user.principal,
        )
    )  # fmt: skip
    return issued, send_link_mail(request, runtime, issued)


@router.post("/members/new", response_class=HTMLResponse)
def create_member(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: FormUser,
    name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    category: Annotated[str, Form(max_length=40)] = "member",
) -> Response:
    """Add a member and show their invitation link (e-mailed if SMTP is set up)."""
    need(user, Role.MANAGER)
    values = {"name": name, "email": email, "category": category}
    errors: dict[str, str] = {}
    if not name.strip():
        errors["name"] = tr(request, "Enter the member's name.")
    if email.strip() and "@" not in email:
        errors["email"] = tr(request, "Enter an email address like name@example.org.")
    member_id = None
    if not errors:
        try:
            member_id = runtime.bus.handle(
                cmds.AddMember(name.strip(), email=email.strip() or None, category=category,
                               actor=user.principal)
            )  # fmt: skip
        except ConflictError:
            errors["email"] = tr(request, "A member already has this email.")
        except DomainError as exc:
            errors["category"] = form_error(request, exc)
    if errors or member_id is None:
        context = _new_member_context(uow, errors=errors, values=values)
        return render(request, "member_new.html", context, status_code=400)
    issued, mailed = invite(request, runtime, user, member_id)
    return _member_page(request, runtime, uow, user, member_id, issued=issued, mailed=mailed)


@router.get("/members/import", response_class=HTMLResponse)
def import_page(request: Request, user: ManagerUser) -> HTMLResponse:
    return render(request, "member_import.html", {"report": None, "error": None, "links": {}})


@router.post("/members/import", response_class=HTMLResponse)
async def import_submit(
    request: Request,
    runtime: RuntimeDep,
    user: FormUser,
    file: Annotated[UploadFile, File()],
    dry_run: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    """Import the CSV; every imported member gets an invitation link (shown, e-mailed)."""
    need(user, Role.MANAGER)
    data = await file.read(MAX_BYTES + 1)
    context: dict[str, Any] = {"report": None, "error": None, "links": {}}
    if len(data) > MAX_BYTES:
        context["error"] = tr(request, "The file is larger than 2 MB.")
        return render(request, "member_import.html", context, status_code=400)
    try:
        report: ImportReport = await run_in_threadpool(
            import_members, runtime.bus, data, user.principal, dry_run=dry_run
        )
    except ImportFormatError as exc:
        context["error"] = form_error(request, exc)
        return render(request, "member_import.html", context, status_code=400)
    links: dict[str, tuple[str, bool]] = {}
    for line in report.lines:
        if line.member_id and not dry_run:
            issued, mailed = await run_in_threadpool(invite, request, runtime, user, line.member_id)
            links[line.member_id] = (link_url(request, runtime, issued.token), mailed)
    context.update(report=report, links=links, refusal=lambda text: refusal_text(request, text))
    return render(request, "member_import.html", context)


def _member_page(
    request: Request, runtime: Any, uow: Any, user: WebUser, member_id: str, **extra: Any
) -> HTMLResponse:
    uow.session.expire_all()
    context = trainer_member_context(uow, user, member_id)
    member = context["member"]
    if user.is_manager:
        context.update(
            badges=uow.badges.of_member(member.id),
            categories=uow.categories.all(),
            machines=uow.machines.all(),
            link=uow.account_links.latest_of({member.id}).get(member.id),
        )
    issued = extra.pop("issued", None)
    context.update(
        issued_url=link_url(request, runtime, issued.token) if issued else None,
        done=request.query_params.get("done", ""),
        **extra,
    )
    return render(request, "member.html", context)


@router.get("/members/{member_id}", response_class=HTMLResponse)
def member_page(
    member_id: str, request: Request, runtime: RuntimeDep, uow: UowDep, user: LoggedIn
) -> HTMLResponse:
    """A member: managers see everything; trainers their trainings and the grant form."""
    need(user, Role.TRAINER)
    return _member_page(request, runtime, uow, user, member_id, mailed=False)


@router.post("/members/{member_id}/invite", response_class=HTMLResponse)
def reinvite(
    member_id: str, request: Request, runtime: RuntimeDep, uow: UowDep, user: FormUser
) -> HTMLResponse:
    """A new one-time link (the previous one stops working)."""
    need(user, Role.MANAGER)
    issued, mailed = invite(request, runtime, user, member_id)
    return _member_page(request, runtime, uow, user, member_id, issued=issued, mailed=mailed)


@router.post("/members/{member_id}/category")
def set_category(
    member_id: str,
    runtime: RuntimeDep,
    user: FormUser,
    category: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    need(user, Role.MANAGER)
    runtime.bus.handle(cmds.UpdateMember(member_id, category=category, actor=user.principal))
    return RedirectResponse(f"/members/{member_id}?done=saved", status_code=303)


@router.post("/members/{member_id}/badges/{badge_id}")
def set_badge_status(
    member_id: str,
    badge_id: int,
    runtime: RuntimeDep,
    user: FormUser,
    status: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    need(user, Role.MANAGER)
    runtime.bus.handle(cmds.SetBadgeStatus(badge_id, status, actor=user.principal))
    return RedirectResponse(f"/members/{member_id}?done=saved", status_code=303)


@router.post("/members/{member_id}/enroll")
def start_enrollment(
    member_id: str,
    runtime: RuntimeDep,
    user: FormUser,
    machine: Annotated[str, Form(max_length=63)] = "",
) -> Response:
    """Wait for the next unknown badge tapped on the chosen machine's reader."""
    need(user, Role.MANAGER)
    enrollment_id = runtime.bus.handle(
        cmds.StartEnrollment(machine, member_id, actor=user.principal)
    )
    return RedirectResponse(f"/members/{member_id}/enroll/{enrollment_id}", status_code=303)


@router.get("/members/{member_id}/enroll/{enrollment_id}", response_class=HTMLResponse)
def enrollment_page(
    member_id: str, enrollment_id: int, request: Request, uow: UowDep, user: ManagerUser
) -> HTMLResponse:
    """Tap the new badge now: the page reloads when the badge arrives."""
    found = uow.enrollments.get(enrollment_id)
    if found is None or found.member_id != member_id:
        raise HTTPException(404, "no such enrollment")
    machine = uow.machines.get(found.machine_id)
    member = uow.members.get(member_id)
    context = {"enrollment": found, "machine": machine, "member": member,
               "expired": found.completed_at is None and found.expires_at <= utcnow()}  # fmt: skip
    return render(request, "enroll.html", context)


# -- machines -------------------------------------------------------------------------------


@router.get("/machines", response_class=HTMLResponse)
def machines(request: Request, runtime: RuntimeDep, user: ManagerUser) -> HTMLResponse:
    context = {"machines": machines_public(runtime.floor.read(), user.principal), **LABELS}
    return render(request, "machines.html", context)


def _machine_context(uow: Any, runtime: Any, user: WebUser, machine_id: str) -> dict[str, Any]:
    machine = _machine_public(uow, runtime, machine_id, user.principal)
    context: dict[str, Any] = {"machine": machine, **LABELS}
    types = list(uow.training_types.covering(machine_id))
    if user.is_manager:
        reports = uow.problem_reports.of_machine(machine_id)
        context.update(
            commands=list_commands(machine_id, uow, user.principal),
            reports=reports,
            report_names=uow.members.names({r.member_id for r in reports if r.member_id}),
            denials=uow.denials.page(machine_id=machine_id, limit=10)[0],
            faults=recent_faults(uow.session, machine.controller.id) if machine.controller else [],
        )
    mine = [t for t in types if user.is_manager or t.id in user.principal.trainer_of]
    context.update(grant_types=mine, trainees=[])
    return context


@router.get("/machines/{machine_id}", response_class=HTMLResponse)
def machine_page(
    machine_id: str,
    request: Request,
    uow: UowDep,
    runtime: RuntimeDep,
    user: LoggedIn,
    q: Search = "",
) -> HTMLResponse:
    """Managers: settings, service, controller, commands, reports. Trainers: grant here."""
    need(user, Role.TRAINER)
    context = _machine_context(uow, runtime, user, machine_id)
    if q:
        rows, _ = uow.members.page(search=q, active=True, limit=20)
        context["trainees"] = [m for m in rows if m.erased_at is None]
    context.update(q=q, grant_levels=grantable_levels(user, context["grant_types"]),
                   done=request.query_params.get("done", ""), errors={})  # fmt: skip
    return render(request, "machine.html", context)


SETTINGS_FIELDS = ("idle_timeout_s", "max_duration_s", "heartbeat_interval_s", "warning_s",
                   "card_removal_grace_s", "supervisor_window_s")  # fmt: skip


@router.post("/machines/{machine_id}/settings", response_class=HTMLResponse)
async def machine_settings(
    machine_id: str, request: Request, runtime: RuntimeDep, user: FormUser
) -> Response:
    """Change the machine's name, mode and timings (the controller gets them signed)."""
    need(user, Role.MANAGER)
    form = await request.form()
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in SETTINGS_FIELDS:
        raw = str(form.get(name, "")).strip()
        if raw:
            if not raw.isdigit() or int(raw) > 7 * 24 * 3600:
                errors[name] = tr(request, "A whole number of seconds.")
            else:
                values[name] = int(raw)
    mode = str(form.get("mode", ""))
    name_value = str(form.get("name", "")).strip()[:200]
    if not errors:
        try:
            await run_in_threadpool(
                runtime.bus.handle,
                cmds.UpdateMachine(
                    machine_id, name=name_value or None,
                    mode=Mode(mode) if mode in ("toggle", "hold") else None,
                    actor=user.principal, **values,
                ),
            )  # fmt: skip
        except DomainError as exc:
            errors["form"] = form_error(request, exc)
    if errors:
        return await run_in_threadpool(
            _machine_error_page, request, runtime, user, machine_id, errors
        )
    return RedirectResponse(f"/machines/{machine_id}?done=saved", status_code=303)


def _machine_error_page(
    request: Request, runtime: Any, user: WebUser, machine_id: str, errors: dict[str, str]
) -> HTMLResponse:
    with runtime.new_uow() as uow:
        context = _machine_context(uow, runtime, user, machine_id)
        context.update(q="", done="", errors=errors,
                       grant_levels=grantable_levels(user, context["grant_types"]))  # fmt: skip
        return render(request, "machine.html", context, status_code=400)


@router.post("/machines/{machine_id}/out-of-service")
def out_of_service(
    machine_id: str,
    runtime: RuntimeDep,
    user: FormUser,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    need(user, Role.MANAGER)
    runtime.bus.handle(
        cmds.SetOutOfService(machine_id, True, reason.strip() or None, actor=user.principal)
    )
    return RedirectResponse(f"/machines/{machine_id}?done=out_of_service", status_code=303)


@router.post("/machines/{machine_id}/back-in-service")
def back_in_service(machine_id: str, runtime: RuntimeDep, user: FormUser) -> Response:
    need(user, Role.MANAGER)
    runtime.bus.handle(cmds.SetOutOfService(machine_id, False, actor=user.principal))
    return RedirectResponse(f"/machines/{machine_id}?done=in_service", status_code=303)


@router.post("/machines/{machine_id}/lock")
def lock(machine_id: str, runtime: RuntimeDep, user: FormUser) -> Response:
    need(user, Role.MANAGER)
    runtime.bus.handle(cmds.LockMachine(machine_id, actor=user.principal))
    return RedirectResponse(f"/machines/{machine_id}?done=locked", status_code=303)


# -- audit log ------------------------------------------------------------------------------


def _day(value: str, tz: str, days: int = 0) -> datetime | None:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=ZoneInfo(tz))
    except ValueError:
        return None
    return (day + timedelta(days=days)).astimezone(UTC)


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request,
    uow: UowDep,
    runtime: RuntimeDep,
    user: ManagerUser,
    actor: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=60)] = "",
    object_type: Annotated[str, Query(max_length=40)] = "",
    object_id: Annotated[str, Query(max_length=100)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The audit log, newest first, filtered; days are the lab's (until = inclusive)."""
    tz = runtime.settings.timezone
    rows, total = uow.audit.page(
        actor_id=actor or None, action=action or None, object_type=object_type or None,
        object_id=object_id or None, since=_day(since, tz), until=_day(until, tz, 1),
        limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
    )  # fmt: skip
    names = uow.members.names({e.actor_id for e in rows if e.actor_id})
    filters = {"actor": actor, "action": action, "object_type": object_type,
               "object_id": object_id, "since": since, "until": until}  # fmt: skip
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    context = {"entries": rows, "total": total, "names": names, "filters": filters,
               "page": page, "pages": max(1, -(-total // PAGE_SIZE)), "query": query}  # fmt: skip
    return render(request, "audit.html", context)
