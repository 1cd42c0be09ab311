"""The navigation links of the billing pages, by the viewer's roles."""

from __future__ import annotations

from starlette.requests import Request

from server.web.i18n import N_

# (page link, message id of the link, role needed).
BILLING_LINKS = (
    ("/billing", N_("Billing"), "treasurer"),
    ("/me/credits", N_("My credits"), "maker"),
    ("/me/statements", N_("My statements"), "maker"),
    ("/me/claims", N_("My contribution claims"), "maker"),
    ("/claims", N_("Contribution claims"), "manager"),
)


def available_links(request: Request) -> list[tuple[str, str]]:
    """The billing links the logged-in viewer's roles may open (none when logged out)."""
    user = getattr(request.state, "web_user", None)
    if user is None:
        return []
    return [(page, label) for page, label, role in BILLING_LINKS if user.has(role)]
