"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from dashboards import STATIC_DIR
from server import __version__, web
from server.api.middleware import (
    BodyLimitMiddleware,
    RejectLoneSurrogatesMiddleware,
    SecurityHeadersMiddleware,
)
from server.api.routes import (
    audit,
    auth,
    billing,
    billing_credits,
    billing_prepaid,
    imports,
    machines,
    members,
    metrics,
    privacy,
    sessions,
    trainings,
)
from server.api.schemas import ErrorPublic
from server.api.validation import validation_error
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
    TooManyAttemptsError,
)
from server.service_layer.imports import MAX_BYTES as IMPORT_MAX_BYTES

logger = logging.getLogger(__name__)

_STATUS = (
    (TooManyAttemptsError, 429),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PermissionDeniedError, 403),
    (AuthenticationError, 401),
)


# 422 stays FastAPI's: a body or parameter that does not fit the schema (detail: a list).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Breaks a rule of the lab; the message says which"},
    401: {"model": ErrorPublic, "description": "Not logged in, or the login or token has ended"},
    403: {"model": ErrorPublic, "description": "Your role does not allow this"},
    404: {"model": ErrorPublic, "description": "No such object, or not yours to see"},
    409: {"model": ErrorPublic, "description": "Conflicts with what already exists"},
    413: {"model": ErrorPublic, "description": "The request body is too large"},
    429: {"model": ErrorPublic, "description": "Too many attempts: wait and retry"},
}


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """A rule the request broke: 4xx with the rule's message."""
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
    headers = None
    if isinstance(exc, TooManyAttemptsError):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)


def _concurrent_change(_request: Request, _exc: Exception) -> JSONResponse:
    """A change that raced another one to the same row (both passed the checks)."""
    return JSONResponse(
        status_code=409,
        content={"detail": "this conflicts with a change made at the same time: reload and retry"},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the app: no `server` banner; forwarded headers are not uvicorn's
    business (it would believe any local client): the app trusts `trusted_proxies` only."""
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "server_header": False,
        "proxy_headers": False,
    }


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Added last = outermost: headers on every answer, then the body bound, then the
    # Unicode check of JSON bodies the bound has already limited.
    app.add_middleware(RejectLoneSurrogatesMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        limits={"/api/members/import": IMPORT_MAX_BYTES},
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)


def _pool_exhausted(request: Request, _exc: Exception) -> JSONResponse:
    """No pooled connection came within FABLAB_DB_POOL_TIMEOUT_S: the server is overloaded."""
    logger.warning("no database connection for %s %s: answered 503", request.method,
                   request.url.path)  # fmt: skip
    return JSONResponse(
        status_code=503,
        content={"detail": "the server is busy: retry in a moment"},
        headers={"Retry-After": "1"},
    )


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The worker threads of this event loop (synchronous routes and dependencies).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.http_threads
        yield

    return lifespan


def create_app(runtime: ServerRuntime) -> FastAPI:
    """The API and pages over an already wired runtime (its start/stop is the caller's)."""
    app = FastAPI(
        lifespan=_lifespan(runtime.settings),
        # Swagger UI and ReDoc are served by server.web from the shipped assets.
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
        title="fablab-monitor",
        version=__version__,
        description=(
            "Machine access and usage of a fablab: members, badges, machines, trainings, "
            "sessions. Authenticate with a personal API token (`Authorization: Bearer …`) "
            "or log in (`POST /api/auth/login`): the session cookie then needs the "
            "`X-CSRF-Token` header on every POST, PUT, PATCH and DELETE."
        ),
    )
    app.state.runtime = runtime
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(IntegrityError, _concurrent_change)
    app.add_exception_handler(StaleDataError, _concurrent_change)
    app.add_exception_handler(PoolTimeoutError, _pool_exhausted)
    _add_middleware(app, runtime.settings)
    # imports before members: /members/import must not be taken for /members/{member_id}.
    routers = (auth, imports, members, privacy, machines, trainings, sessions, audit, billing,
               billing_credits, billing_prepaid, metrics)  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    web.install(app)  # the pages, offline API docs, HTML error pages for browsers

    @app.get("/api/health", tags=["health"])
    def health() -> dict[str, object]:
        link = runtime.link
        return {"status": "ok", "mqtt_connected": bool(link and link.connected)}

    return app
