"""Error pages: a browser gets a page in its language, API clients keep their JSON."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
)
from server.web.session import LoginRequired, login_url
from server.web.templating import render

logger = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]
_DOMAIN_STATUS = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (PermissionDeniedError, 403),
    (AuthenticationError, 401),
)


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (not the API, not a script asking for JSON)."""
    path = request.url.path
    if path.startswith("/api/") or path == "/openapi.json":
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status_code: int) -> Response:
    if status_code == 401:
        return RedirectResponse(login_url(request.url.path), status_code=303)
    return render(request, "error.html", {"status_code": status_code}, status_code=status_code)


async def _delegate(previous: Handler, request: Request, exc: Exception) -> Response:
    answer = previous(request, exc)
    if isinstance(answer, Response):
        return answer
    return await answer


def install_error_pages(app: FastAPI) -> None:
    """Wrap the app's handlers: HTML pages for browsers, the same JSON as before otherwise."""
    previous_domain: Handler | None = app.exception_handlers.get(DomainError)
    previous_http: Handler = app.exception_handlers.get(
        StarletteHTTPException, http_exception_handler
    )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if wants_html(request):
            return error_page(request, exc.status_code)
        return await _delegate(previous_http, request, exc)

    async def on_domain(request: Request, exc: Exception) -> Response:
        if wants_html(request) or previous_domain is None:
            status_code = next((c for kind, c in _DOMAIN_STATUS if isinstance(exc, kind)), 400)
            return error_page(request, status_code)
        return await _delegate(previous_domain, request, exc)

    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    async def on_crash(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        if wants_html(request):
            return render(request, "error.html", {"status_code": 500}, status_code=500)
        return Response('{"detail":"internal server error"}', 500, media_type="application/json")

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(Exception, on_crash)
