"""The place of the billing pages (treasurer, and the maker's credits and statements).

The billing domain and its API land separately; until its routes exist, no billing page
or link is shown (no placeholder data). Once they exist, the links below appear in the
navigation; the treasurer's pages (rates, categories, periods, statements, credit
notes, exports) are added here, calling the billing service layer.
"""

from __future__ import annotations

from starlette.requests import Request

from server.web.i18n import N_

# (API path prefix that must exist, page link, message id of the link, role needed).
BILLING_LINKS = (
    ("/api/billing", "/billing", N_("Billing"), "treasurer"),
    ("/api/me/credits", "/me/credits", N_("My credits"), "maker"),
    ("/api/me/statements", "/me/statements", N_("My statements"), "maker"),
    ("/api/me/claims", "/me/claims", N_("My contribution claims"), "maker"),
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
