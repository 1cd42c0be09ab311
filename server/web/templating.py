"""Rendering the Jinja templates of dashboards/ in the viewer's language."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from dashboards import TEMPLATES_DIR
from server.web.billing_nav import available_links
from server.web.i18n import LOCALES, Formatter, Gettext, gettext_for, request_locale
from server.web.session import anonymous_form_token, keep_form_token

_current_gettext: ContextVar[Gettext] = ContextVar("current_gettext")


def _gettext(message: str, **values: object) -> str:
    return _current_gettext.get()(message, **values)


def _ngettext(singular: str, plural: str, n: int, **values: object) -> str:
    values.setdefault("num", n)
    return _gettext(singular if n == 1 else plural, **values)


environment = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=select_autoescape(["html", "xml", "svg"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
environment.filters["urlquote"] = lambda value: quote(str(value), safe="")


def page_context(request: Request) -> dict[str, Any]:
    """What every page needs: language, formatter, the viewer, the path for the switch."""
    runtime = request.app.state.runtime
    locale = getattr(request.state, "locale", None) or request_locale(request)
    request.state.locale = locale
    settings = runtime.settings
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "request": request,
        "locale": locale,
        "locales": LOCALES,
        "fmt": Formatter(locale, settings.timezone, settings.currency),
        "site": settings.site,
        "timezone": settings.timezone,
        "user": getattr(request.state, "web_user", None),
        "here": path,
        "billing_links": billing_links(request),
        "form_token": anonymous_form_token(request),
    }


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """The template rendered in the request's language, as an HTML response."""
    full = page_context(request)
    full.update(context or {})
    token = _current_gettext.set(gettext_for(full["locale"]))
    try:
        html = environment.get_template(template).render(full)
    finally:
        _current_gettext.reset(token)
    response = HTMLResponse(html, status_code=status_code)
    keep_form_token(request, response)
    return response


def render_text(locale: str, template: str, context: dict[str, Any]) -> str:
    """A template (an e-mail, a page fragment) rendered to text in the given language."""
    token = _current_gettext.set(gettext_for(locale))
    try:
        return environment.get_template(template).render(context)
    finally:
        _current_gettext.reset(token)


def billing_links(request: Request) -> list[tuple[str, str]]:
    """Links to the billing pages the viewer may open: (path, message id).

    The pages themselves are in `server/web/treasurer.py`.
    """
    return available_links(request)
