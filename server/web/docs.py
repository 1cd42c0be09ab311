"""API documentation served offline: Swagger UI and ReDoc from /static, no CDN."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from server.api.deps import CSRF_HEADER, SESSION_COOKIE
from server.web.session import PageUser
from server.web.templating import render

router = APIRouter(include_in_schema=False)

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A personal API token (My space → API tokens).",
    },
    "cookieAuth": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The browser login (POST /api/auth/login); unsafe methods also need "
        f"the {CSRF_HEADER} header.",
    },
    "csrfHeader": {
        "type": "apiKey",
        "in": "header",
        "name": CSRF_HEADER,
        "description": "The csrf_token answered by the login, on POST, PUT, PATCH, DELETE.",
    },
}


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request, user: PageUser) -> HTMLResponse:
    """Swagger UI; logged in, its "Try it out" sends the login's CSRF token."""
    return render(request, "api_docs.html", {"csrf": user.csrf_token if user else ""})


# ReDoc styles its page with styled-components (inline <style>) and searches in a blob:
# worker: its page, which shows only the public OpenAPI document, allows both.
REDOC_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
    "img-src 'self' data:; frame-ancestors 'none'"
)


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    response = render(request, "api_redoc.html")
    response.headers["Content-Security-Policy"] = REDOC_CSP
    return response


def install_openapi_security(app: FastAPI) -> None:
    """Declare the bearer and cookie + CSRF schemes in the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        # {}: some operations (the floor, open data, login) also answer anonymous callers.
        schema["security"] = [{"bearerAuth": []}, {"cookieAuth": [], "csrfHeader": []}, {}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
