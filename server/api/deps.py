"""FastAPI dependencies: the runtime, a unit of work, and who is asking."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from server.adapters.orm import utcnow
from server.adapters.secrets import token_hash
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer.accounts import principal_of
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

SESSION_COOKIE = "fablab_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)


async def get_runtime(request: Request) -> ServerRuntime:
    # async: a plain attribute read is not worth a worker thread.
    runtime: ServerRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServerRuntime, Depends(get_runtime)]


async def get_uow(runtime: RuntimeDep) -> AsyncIterator[SqlAlchemyUnitOfWork]:
    """A read-side unit of work for the request, once one of the runtime's request slots
    is free (waiting holds no thread and no connection; see `RequestSlots`)."""
    async with runtime.db_slots.semaphore():
        uow = runtime.new_uow().__enter__()  # opens a session: no I/O until a query
        try:
            yield uow
        finally:
            # Closing may talk to the database (a rollback): in a thread of its own, never
            # waiting for the worker threads that requests may all be holding.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    uow.__exit__, None, None, None, limiter=anyio.CapacityLimiter(1)
                )


# Function scope: the session is closed once the response is built, not after it is
# sent, so a slow client does not keep a slot.
UowDep = Annotated[SqlAlchemyUnitOfWork, Depends(get_uow, scope="function")]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _from_bearer(uow: SqlAlchemyUnitOfWork, token: str) -> Principal:
    api_token = uow.credentials.api_token(token_hash(token))
    if api_token is None or api_token.revoked_at is not None:
        raise _unauthorized("invalid or revoked API token")
    member = uow.members.get(api_token.member_id)
    if member is None or not member.active or member.erased_at is not None:
        raise _unauthorized("invalid or revoked API token")
    now = utcnow()
    if api_token.last_used_at is None or now - api_token.last_used_at > _TOKEN_TOUCH_INTERVAL:
        api_token.last_used_at = now
        uow.commit()
    return principal_of(uow, member)


def _from_cookie(uow: SqlAlchemyUnitOfWork, request: Request, token: str) -> Principal:
    login = uow.credentials.login_session(token_hash(token))
    if login is None or login.expires_at <= utcnow():
        raise _unauthorized("your login has expired: log in again")
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, login.csrf_token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER}")
    member = uow.members.get(login.member_id)
    if member is None or not member.active or member.erased_at is not None:
        raise _unauthorized("your login has expired: log in again")
    return principal_of(uow, member)


async def get_optional_principal(request: Request, runtime: RuntimeDep) -> Principal | None:
    """The person behind the bearer token or the session cookie, or None if anonymous.

    Looked up in a worker thread, in a unit of work of its own closed before the route
    runs (its connection goes back to the pool within that thread); a bearer token
    checked recently comes from the runtime's `TokenCache`, without a thread.
    """
    authorization = request.headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("use 'Authorization: Bearer <token>'")
        return await _bearer_principal(runtime, token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await run_in_threadpool(_cookie_principal, runtime, request, cookie)
    return None


async def _bearer_principal(runtime: ServerRuntime, token: str) -> Principal:
    key = token_hash(token)
    cached = runtime.token_cache.get(key)
    if cached is not None:
        return cached
    generation = runtime.token_cache.generation
    principal = await run_in_threadpool(_bearer_lookup, runtime, token)
    runtime.token_cache.put(key, principal, generation)
    return principal


def _bearer_lookup(runtime: ServerRuntime, token: str) -> Principal:
    with runtime.new_uow() as uow:
        return _from_bearer(uow, token)


def _cookie_principal(runtime: ServerRuntime, request: Request, cookie: str) -> Principal:
    with runtime.new_uow() as uow:
        return _from_cookie(uow, request, cookie)


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


async def get_principal(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise _unauthorized("log in or send an API token")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through a person holding any of the roles."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not any(principal.has(role) for role in roles):
            names = " or ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {names} role")
        return principal

    return check


ManagerPrincipal = Annotated[Principal, Depends(require(Role.MANAGER))]
AdminPrincipal = Annotated[Principal, Depends(require(Role.ADMIN))]
TrainerPrincipal = Annotated[Principal, Depends(require(Role.TRAINER))]
TreasurerOrManager = Annotated[Principal, Depends(require(Role.TREASURER, Role.MANAGER))]
