"""Who is looking at a page: the login cookie, the CSRF field of forms, role checks."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status

from server.adapters.orm import utcnow
from server.adapters.secrets import new_token, token_hash
from server.api.deps import SESSION_COOKIE, RuntimeDep
from server.domain.access import Principal, Role
from server.service_layer.accounts import principal_of
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class WebUser:
    """The logged-in member behind the page, and the CSRF token their forms carry."""

    principal: Principal
    name: str
    csrf_token: str

    @property
    def member_id(self) -> str:
        return self.principal.member_id

    def has(self, role: str) -> bool:
        return self.principal.has(Role(role))

    @property
    def is_manager(self) -> bool:
        return self.principal.is_manager

    @property
    def is_trainer(self) -> bool:
        return bool(self.principal.trainer_of) or self.principal.is_manager


class LoginRequired(Exception):  # noqa: N818 - a signal, turned into a redirect
    """The page needs a login: the handler redirects to /login?next=…"""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _lookup(uow: SqlAlchemyUnitOfWork, cookie: str) -> WebUser | None:
    login = uow.credentials.login_session(token_hash(cookie))
    if login is None or login.expires_at <= utcnow():
        return None
    member = uow.members.get(login.member_id)
    if member is None or not member.active or member.erased_at is not None:
        return None
    return WebUser(principal_of(uow, member), member.name, login.csrf_token)


def web_user(request: Request, runtime: RuntimeDep) -> WebUser | None:
    """The member logged in with the session cookie, or None (pages ignore API tokens).

    Read in a unit of work of its own, closed before the page's handler runs.
    """
    if hasattr(request.state, "web_user"):
        found: WebUser | None = request.state.web_user
        return found
    cookie = request.cookies.get(SESSION_COOKIE)
    user = None
    if cookie:
        with runtime.new_uow() as uow:
            user = _lookup(uow, cookie)
    request.state.web_user = user
    return user


PageUser = Annotated[WebUser | None, Depends(web_user)]


def _next_path(request: Request) -> str:
    path = request.url.path
    if request.method == "GET" and request.url.query:
        path += "?" + request.url.query
    return path


def require_login(request: Request, user: PageUser) -> WebUser:
    if user is None:
        raise LoginRequired(_next_path(request))
    return user


LoggedIn = Annotated[WebUser, Depends(require_login)]


def _require(role: Role) -> Callable[[WebUser], WebUser]:
    def check(user: LoggedIn) -> WebUser:
        allowed = user.is_trainer if role is Role.TRAINER else user.principal.has(role)
        if not allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role.value} role")
        return user

    return check


ManagerUser = Annotated[WebUser, Depends(_require(Role.MANAGER))]
TrainerUser = Annotated[WebUser, Depends(_require(Role.TRAINER))]
TreasurerUser = Annotated[WebUser, Depends(_require(Role.TREASURER))]


async def check_csrf(request: Request, user: LoggedIn) -> WebUser:
    """A form posted by a logged-in member must carry their CSRF token."""
    form = await request.form()
    sent = str(form.get(CSRF_FIELD, ""))
    if not hmac.compare_digest(sent, user.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form has expired: reload the page")
    return user


FormUser = Annotated[WebUser, Depends(check_csrf)]


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def safe_next(value: str | None) -> str:
    """A local path to go back to after login or a language switch (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def need(user: WebUser, role: Role) -> None:
    """Refuse (403 page) unless the member holds the role."""
    allowed = user.is_trainer if role is Role.TRAINER else user.principal.has(role)
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role.value} role")


# -- forms posted before logging in (login, forgot password, set password) -----------------

FORM_COOKIE = "fablab_form"
FORM_FIELD = "form_token"


def anonymous_form_token(request: Request) -> str:
    """The browser's form token (double-submit cookie), made on its first page."""
    token = request.cookies.get(FORM_COOKIE) or getattr(request.state, "new_form_token", None)
    if not token:
        token = new_token()
        request.state.new_form_token = token
    return token


def keep_form_token(request: Request, response: Response) -> None:
    """Set the cookie of a form token made while rendering this page."""
    token = getattr(request.state, "new_form_token", None)
    if token:
        response.set_cookie(FORM_COOKIE, token, httponly=True, samesite="strict", path="/")


async def check_anonymous_form(request: Request) -> None:
    """A form posted without a login must echo the browser's form-token cookie, so that
    another site cannot post it (login CSRF)."""
    form = await request.form()
    cookie = request.cookies.get(FORM_COOKIE, "")
    sent = str(form.get(FORM_FIELD, ""))
    if not cookie or not hmac.compare_digest(sent, cookie):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form has expired: reload the page")


AnonymousForm = Annotated[None, Depends(check_anonymous_form)]
