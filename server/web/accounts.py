"""Account pages: log in and out, set a password through a one-time link, forgot
password, change password, and the language switch."""

from __future__ import annotations

import logging
import smtplib
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.adapters.mail import Mail
from server.adapters.orm import utcnow
from server.api.deps import SESSION_COOKIE, RuntimeDep, UowDep
from server.bootstrap import ServerRuntime
from server.domain.errors import AuthenticationError, DomainError, TooManyAttemptsError
from server.service_layer import commands as cmds
from server.service_layer.account_links import InvalidLinkError, IssuedLink, link_member
from server.service_layer.accounts import LOGIN_LIFETIME, LoginResult
from server.service_layer.members import MIN_PASSWORD_LENGTH
from server.web.error_messages import form_error
from server.web.i18n import LANG_COOKIE, LOCALES, gettext_for, request_locale, tr
from server.web.session import AnonymousForm, FormUser, LoggedIn, PageUser, safe_next
from server.web.templating import render, render_text

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=500)]
OptionalText = Annotated[str, Form(max_length=500)]
LANG_COOKIE_AGE = 365 * 24 * 3600




@router.get("/lang/{code}")
def switch_language(code: str, request: Request, next: str = "/") -> Response:
    """Remember the chosen language (a cookie) and go back to the page."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if code in LOCALES:
        response.set_cookie(
            LANG_COOKIE, code, max_age=LANG_COOKIE_AGE, samesite="lax", httponly=True, path="/"
        )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, user: PageUser, next: str = "/me", done: str = "") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "done": done, "errors": {}})


def _set_login_cookie(response: Response, runtime: ServerRuntime, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(LOGIN_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=runtime.settings.secure_cookies,
        path="/",
    )


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    runtime: RuntimeDep,
    _form: AnonymousForm,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=500)] = "/me",
) -> Response:
    """Check the password (same rate limit as the API's login) and open a session."""
    client = request.client.host if request.client else "unknown"
    keys = (f"ip:{client}", f"email:{email}")
    context = {"next": safe_next(next), "email": email, "done": "", "errors": {}}
    wait = runtime.login_limiter.retry_after(*keys)
    if wait:
        message = tr(request, "Too many failed logins: try again in %(s)s s.", s=wait)
        context["errors"] = {"form": message}
        return render(request, "login.html", context, status_code=429)
    try:
        result: LoginResult = runtime.bus.handle(cmds.Login(email, password))
    except AuthenticationError:
        runtime.login_limiter.failed(*keys)
        context["errors"] = {"form": tr(request, "Wrong email or password.")}
        return render(request, "login.html", context, status_code=401)
    runtime.login_limiter.succeeded(*keys)
    response = RedirectResponse(safe_next(next), status_code=303)
    _set_login_cookie(response, runtime, result.token)
    return response


@router.post("/logout")
def logout(request: Request, runtime: RuntimeDep, user: FormUser) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        runtime.bus.handle(cmds.Logout(token))
    response = RedirectResponse("/login?done=logout", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _password_errors(request: Request, password: str, confirm: str) -> dict[str, str]:
    if len(password) < MIN_PASSWORD_LENGTH:
        return {"password": tr(request, "At least %(n)s characters.", n=MIN_PASSWORD_LENGTH)}
    if password != confirm:
        return {"confirm": tr(request, "The two passwords differ.")}
    return {}


@router.get("/set-password/{token}", response_class=HTMLResponse)
def set_password_page(token: str, request: Request, uow: UowDep) -> HTMLResponse:
    """The page a one-time link opens: choose a password."""
    try:
        link = link_member(uow, token, utcnow())
    except InvalidLinkError:
        return render(request, "link_invalid.html", status_code=410)
    member = uow.members.get(link.member_id)
    context = {"token": token, "name": member.name if member else "", "errors": {},
               "purpose": link.purpose, "min_length": MIN_PASSWORD_LENGTH}  # fmt: skip
    return render(request, "set_password.html", context)


@router.post("/set-password/{token}", response_class=HTMLResponse)
def set_password_submit(
    token: str,
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    _form: AnonymousForm,
    password: Annotated[str, Form(max_length=500)] = "",
    confirm: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        link = link_member(uow, token, utcnow())
    except InvalidLinkError:
        return render(request, "link_invalid.html", status_code=410)
    errors = _password_errors(request, password, confirm)
    if not errors:
        try:
            runtime.bus.handle(cmds.UseAccountLink(token, password))
        except InvalidLinkError:
            return render(request, "link_invalid.html", status_code=410)
        except DomainError as exc:
            errors = {"password": form_error(request, exc)}
    if errors:
        member = uow.members.get(link.member_id)
        context = {"token": token, "name": member.name if member else "", "errors": errors,
                   "purpose": link.purpose, "min_length": MIN_PASSWORD_LENGTH}  # fmt: skip
        return render(request, "set_password.html", context, status_code=400)
    return RedirectResponse("/login?done=password", status_code=303)


@router.get("/forgot", response_class=HTMLResponse)
def forgot_page(request: Request) -> HTMLResponse:
    return render(request, "forgot.html", {"sent": False, "mail_enabled": True})


def link_url(request: Request, runtime: ServerRuntime, token: str) -> str:
    base = runtime.settings.public_url or str(request.base_url)
    return base.rstrip("/") + f"/set-password/{token}"


def send_link_mail(request: Request, runtime: ServerRuntime, issued: IssuedLink) -> bool:
    """E-mail the link in the page's language; False if there is no SMTP or it failed."""
    if runtime.mailer is None or not issued.email:
        return False
    locale = request_locale(request)
    context = {"name": issued.member_name, "url": link_url(request, runtime, issued.token),
               "site": runtime.settings.site, "purpose": issued.purpose}  # fmt: skip
    _ = gettext_for(locale)
    subject = (
        _("Your fablab account: choose a password")
        if issued.purpose == "invite"
        else _("Reset your fablab password")
    )
    body = render_text(locale, "mail/account_link.txt", context)
    try:
        runtime.mailer.send(Mail(issued.email, subject, body))
    except (OSError, smtplib.SMTPException):
        logger.exception("could not e-mail the set-password link of %s", issued.member_id)
        return False
    return True


@router.post("/forgot", response_class=HTMLResponse)
def forgot_submit(
    request: Request,
    runtime: RuntimeDep,
    _form: AnonymousForm,
    email: Annotated[str, Form(max_length=320)] = "",
) -> HTMLResponse:
    """The same answer whether or not the address has an account (no enumeration)."""
    if email.strip():
        issued: IssuedLink | None = runtime.bus.handle(
            cmds.RequestPasswordReset(email, valid_hours=runtime.settings.account_link_hours)
        )
        if issued is not None:
            send_link_mail(request, runtime, issued)
    context = {"sent": True, "mail_enabled": runtime.mailer is not None}
    return render(request, "forgot.html", context)


@router.get("/me/password", response_class=HTMLResponse)
def password_page(request: Request, user: LoggedIn, done: str = "") -> HTMLResponse:
    context = {"errors": {}, "done": bool(done), "min_length": MIN_PASSWORD_LENGTH}
    return render(request, "password.html", context)


@router.post("/me/password", response_class=HTMLResponse)
def password_submit(
    request: Request,
    runtime: RuntimeDep,
    user: FormUser,
    current: Annotated[str, Form(max_length=500)] = "",
    password: Annotated[str, Form(max_length=500)] = "",
    confirm: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Change my password through the service layer's one password change."""
    errors = _password_errors(request, password, confirm)
    if not errors:
        try:
            runtime.bus.handle(
                cmds.SetPassword(
                    user.member_id, password, current_password=current, actor=user.principal,
                    # This login stays open; the member's other logins and tokens end.
                    keep_login=request.cookies.get(SESSION_COOKIE),
                )
            )
        except AuthenticationError:
            errors = {"current": tr(request, "The current password is wrong.")}
        except TooManyAttemptsError:
            errors = {"current": tr(request, "Too many wrong passwords: try again later.")}
        except DomainError as exc:
            errors = {"password": form_error(request, exc)}
    if errors:
        context = {"errors": errors, "done": False, "min_length": MIN_PASSWORD_LENGTH}
        return render(request, "password.html", context, status_code=400)
    return RedirectResponse("/me/password?done=1", status_code=303)
