"""axe-core finds no serious or critical violation on any page, in French and English;
screenshots of the main pages at desktop and phone width go to docs/screenshots/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import (
    AXE_JS,
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    LiveLab,
    NewPage,
    log_in,
)

pytestmark = pytest.mark.browser

ANONYMOUS_PAGES = ("/", "/?kiosk=1", "/login", "/forgot", "/open-data")
MANAGER_PAGES = (
    "/me", "/me/sessions", "/me/tokens", "/me/password", "/report", "/trainer",
    "/trainer?q=a", "/trainer/supervised", "/members", "/members/new", "/members/import",
    "/members/ada", "/machines", "/machines/laser", "/machines/laser?q=nora", "/audit",
    "/stats", "/no-such-page",
)  # fmt: skip
SCREENSHOT_PAGES = {
    "floor": "/",
    "login": "/login",
    "my-space": "/me",
    "member": "/members/ada",
    "machine": "/machines/laser",
    "stats": "/stats",
    "open-data": "/open-data",
}
BLOCKING = ("serious", "critical")


def _violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {v['nodes'][0]['target']}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_browser_axe_no_serious_violation_on_any_page(
    live: LiveLab, new_page: NewPage, locale: str
) -> None:
    found: dict[str, list[str]] = {}
    anonymous = new_page(locale, bypass_csp=True)
    for path in ANONYMOUS_PAGES:
        anonymous.goto(path)
        found[path] = _violations(anonymous)
    page = new_page(locale, bypass_csp=True)
    log_in(page, "mona")
    for path in MANAGER_PAGES:
        page.goto(path)
        found[path] = _violations(page)
    assert {path: v for path, v in found.items() if v} == {}


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_browser_screenshots_and_no_horizontal_scroll_on_a_phone(
    live: LiveLab, new_page: NewPage, locale: str
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    too_wide = []
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = new_page(locale, viewport)
        log_in(page, "mona")
        for name, path in SCREENSHOT_PAGES.items():
            page.goto(path)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{locale}-{size_name}.png"))
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > viewport["width"]:
                too_wide.append((path, size_name, width))
    assert too_wide == []


def test_browser_pages_break_no_self_only_csp(new_page: NewPage) -> None:
    """No page (nor the API docs) needs an inline script or style or a foreign asset."""
    page = new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    # A navigation away aborts what the page still loads (the floor's event stream):
    # not a refusal. Blocked by CSP or by the offline rule are.
    page.on(
        "requestfailed",
        lambda r: None if r.failure == "net::ERR_ABORTED" else refused.append(r.url),
    )
    log_in(page, "mona")
    for path in (*ANONYMOUS_PAGES, *MANAGER_PAGES, "/docs", "/redoc"):
        page.goto(path)
    assert refused == []


def test_browser_api_docs_render_offline(new_page: NewPage) -> None:
    page = new_page()
    page.goto("/docs")
    page.locator(".swagger-ui .info .title", has_text="fablab-monitor").wait_for()
    page.locator(".opblock-summary-path", has_text="/api/machines").first.wait_for()
    page.goto("/redoc")
    page.locator("h1", has_text="fablab-monitor").wait_for()
