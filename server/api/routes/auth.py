"""Logging in and out, one's own profile, password and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from server.api.deps import SESSION_COOKIE, CurrentPrincipal, RuntimeDep, UowDep
from server.api.schemas import (
    ApiTokenCreate,
    ApiTokenPublic,
    LoginPublic,
    LoginRequest,
    MePublic,
    MeUpdate,
    NewApiTokenPublic,
    PasswordChange,
    RowId,
)
from server.domain.errors import AuthenticationError, NotFoundError
from server.service_layer import commands as cmds
from server.service_layer.accounts import LOGIN_LIFETIME, LoginResult, NewApiToken

router = APIRouter(prefix="/api", tags=["accounts"])


@router.post(
    "/auth/login",
    response_model=LoginPublic,
    responses={
        401: {"description": "Wrong email or password"},
        429: {"description": "Too many attempts"},
    },
)
def login(
    body: LoginRequest, request: Request, response: Response, runtime: RuntimeDep
) -> LoginPublic:
    """Open a browser session (HttpOnly cookie). Unsafe requests then need `X-CSRF-Token`."""
    client = request.client.host if request.client else "unknown"
    keys = (f"ip:{client}", f"email:{body.email}")
    wait = runtime.login_limiter.retry_after(*keys)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    try:
        result: LoginResult = runtime.bus.handle(cmds.Login(body.email, body.password))
    except AuthenticationError:
        runtime.login_limiter.failed(*keys)
        raise
    runtime.login_limiter.succeeded(*keys)
    response.set_cookie(
        SESSION_COOKIE,
        result.token,
        max_age=int(LOGIN_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=runtime.settings.secure_cookies,
        path="/",
    )
    return LoginPublic(member_id=result.member_id, csrf_token=result.csrf_token)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, response: Response, runtime: RuntimeDep) -> None:
    """End the browser session."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        runtime.bus.handle(cmds.Logout(token))
    response.delete_cookie(SESSION_COOKIE, path="/")


def _me(uow: UowDep, principal: CurrentPrincipal) -> MePublic:
    member = uow.members.get(principal.member_id)
    if member is None:
        raise NotFoundError("no such member")
    return MePublic(
        id=member.id,
        name=member.name,
        email=member.email,
        category=member.category,
        roles=sorted({r.value for r in principal.roles}),
        trainer_of=sorted(principal.trainer_of),
    )


@router.get("/me", response_model=MePublic)
def get_me(uow: UowDep, principal: CurrentPrincipal) -> MePublic:
    """Who I am: profile, lab-wide roles and the trainings I am trainer of."""
    return _me(uow, principal)


@router.patch("/me", response_model=MePublic)
def update_me(
    body: MeUpdate, runtime: RuntimeDep, uow: UowDep, principal: CurrentPrincipal
) -> MePublic:
    """Change my name or email (not my role, category or anything else)."""
    runtime.bus.handle(
        cmds.UpdateMember(principal.member_id, name=body.name, email=body.email, actor=principal)
    )
    uow.session.expire_all()
    return _me(uow, principal)


@router.post(
    "/me/password",
    status_code=204,
    responses={
        401: {"description": "Wrong current password"},
        429: {"description": "Too many wrong current passwords"},
    },
)
def change_password(
    body: PasswordChange, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal
) -> None:
    """Change my password: this login stays open, my other logins and all my API tokens end.
    Wrong current passwords are rate-limited (429)."""
    runtime.bus.handle(
        cmds.SetPassword(
            principal.member_id,
            body.new_password,
            current_password=body.current_password,
            keep_login=request.cookies.get(SESSION_COOKIE),
            actor=principal,
        )
    )


@router.get("/me/tokens", response_model=list[ApiTokenPublic])
def list_tokens(uow: UowDep, principal: CurrentPrincipal) -> list[ApiTokenPublic]:
    return [
        ApiTokenPublic(
            id=t.id,
            name=t.name,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )
        for t in uow.credentials.api_tokens_of(principal.member_id)
    ]


@router.post("/me/tokens", response_model=NewApiTokenPublic, status_code=201)
def create_token(
    body: ApiTokenCreate, runtime: RuntimeDep, principal: CurrentPrincipal
) -> NewApiTokenPublic:
    """A personal API token for integrations; the secret is shown only in this answer."""
    created: NewApiToken = runtime.bus.handle(
        cmds.CreateApiToken(principal.member_id, body.name, actor=principal)
    )
    return NewApiTokenPublic(id=created.token_id, name=created.name, token=created.token)


@router.delete(
    "/me/tokens/{token_id}", status_code=204, responses={404: {"description": "No such token"}}
)
def revoke_token(token_id: RowId, runtime: RuntimeDep, principal: CurrentPrincipal) -> None:
    runtime.bus.handle(cmds.RevokeApiToken(principal.member_id, token_id, actor=principal))
