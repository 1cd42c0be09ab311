"""The FastAPI application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from dashboards import STATIC_DIR
from server import __version__
from server.api.routes import (
    audit,
    auth,
    billing,
    billing_credits,
    imports,
    machines,
    members,
    pages,
    privacy,
    sessions,
    trainings,
)
from server.api.schemas import ErrorPublic
from server.bootstrap import ServerRuntime
from server.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
)

_STATUS = (
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
    429: {"model": ErrorPublic, "description": "Too many attempts: wait and retry"},
}


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """A rule the request broke: 4xx with the rule's message."""
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
    return JSONResponse(status_code=status, content={"detail": str(exc)})


def create_app(runtime: ServerRuntime) -> FastAPI:
    """The API and pages over an already wired runtime (its start/stop is the caller's)."""
    app = FastAPI(
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
    # imports before members: /members/import must not be taken for /members/{member_id}.
    routers = (auth, imports, members, privacy, machines, trainings, sessions, audit, pages,
               billing, billing_credits)  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/api/health", tags=["health"])
    def health() -> dict[str, object]:
        link = runtime.link
        return {"status": "ok", "mqtt_connected": bool(link and link.connected)}

    return app
