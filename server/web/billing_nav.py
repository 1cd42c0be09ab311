"""The navigation links of the billing pages, shown once the billing API is served."""

from __future__ import annotations

from starlette.requests import Request

from server.web.i18n import N_

# (API path prefix that must exist, page link, message id of the link, role needed).
BILLING_LINKS = (
    ("/api/billing", "/billing", N_("Billing"), "treasurer"),
    ("/api/billing", "/me/credits", N_("My credits"), "maker"),
    ("/api/billing", "/me/statements", N_("My statements"), "maker"),
    ("/api/billing", "/me/claims", N_("My contribution claims"), "maker"),
    ("/api/billing", "/claims", N_("Contribution claims"), "manager"),
)


def _route_paths(request: Request) -> set[str]:
    return {getattr(route, "path", "") for route in request.app.routes}


def available_links(request: Request) -> list[tuple[str, str]]:
    """Billing links whose API exists and whose page is served, for the viewer's roles."""
    user = getattr(request.state, "web_user", None)
    if user is None:
        return []
    paths = _route_paths(request)
    links = []
    for api_prefix, page, label, role in BILLING_LINKS:
        has_api = any(p.startswith(api_prefix) for p in paths)
        if has_api and page in paths and user.has(role):
            links.append((page, label))
    return links
