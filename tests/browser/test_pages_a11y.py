"""Every page, billing pages included, in French and English: axe-core finds no serious
or critical violation, and nothing is wider than a 390-px phone. Screenshots of the main
pages at desktop and phone width go to docs/screenshots/ when asked:

    FABLAB_SCREENSHOTS=1 PYTHONPATH=$PWD .venv/bin/python -m pytest \
        tests/browser/test_pages_a11y.py -k screenshots
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import (
    AXE_JS,
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    SCREENSHOTS_ENV,
    BillingLab,
    NewPage,
    log_in,
)

pytestmark = pytest.mark.browser

ANONYMOUS_PAGES = ("/", "/?kiosk=1", "/login", "/forgot", "/open-data")
MANAGER_PAGES = (
    "/me", "/me/sessions", "/me/tokens", "/me/password", "/report", "/trainer",
    "/trainer?q=a", "/trainer/supervised", "/members", "/members/new", "/members/import",
    "/members/ada", "/machines", "/machines/laser", "/machines/laser?q=nora", "/audit",
    "/stats", "/claims", "/no-such-page",
)  # fmt: skip
BLOCKING = ("serious", "critical")
# Who opens which page: None is anonymous.
Visit = tuple[str | None, str]


def billing_pages(billing: BillingLab) -> list[Visit]:
    """The treasurer's, the maker's and the manager's billing pages, with their data."""
    period = f"/billing/periods/{billing.period_id}"
    approved = billing.approved_statement_id
    return [
        ("tess", "/billing"), ("tess", period),
        ("tess", f"/billing/statements/{approved}"),
        ("tess", f"/billing/statements/{billing.draft_statement_id}"),
        ("ada", "/me/statements"), ("ada", f"/me/statements/{approved}"),
        ("ada", "/me/credits"), ("ada", "/me/claims"), ("mona", "/claims"),
    ]  # fmt: skip


def every_page(billing: BillingLab) -> list[Visit]:
    return [
        *((None, path) for path in ANONYMOUS_PAGES),
        *(("mona", path) for path in MANAGER_PAGES),
        *billing_pages(billing),
    ]


def visit(
    new_page: NewPage, visits: list[Visit], **options: Any
) -> Iterator[tuple[Any, str, int]]:
    """Open each page as its viewer (one browser context per viewer); yields the page,
    its path and its HTTP status."""
    pages: dict[str | None, Any] = {}
    for who, path in visits:
        if who not in pages:
            pages[who] = new_page(**options)
            if who is not None:
                log_in(pages[who], who)
        response = pages[who].goto(path)
        yield pages[who], path, response.status if response else 0


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
    billing: BillingLab, new_page: NewPage, locale: str
) -> None:
    found = {
        path: _violations(page)
        for page, path, _ in visit(new_page, every_page(billing), locale=locale, bypass_csp=True)
    }
    assert {path: v for path, v in found.items() if v} == {}


# Wider than the viewport: the page itself, or a table cut inside its scrolling wrapper.
TOO_WIDE_JS = """() => {
  const found = [];
  if (document.documentElement.scrollWidth > window.innerWidth) {
    found.push('page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
  }
  document.querySelectorAll('.table-wrap').forEach((wrap, i) => {
    if (wrap.scrollWidth > wrap.clientWidth) {
      found.push('table ' + i + ' ' + wrap.scrollWidth + ' > ' + wrap.clientWidth);
    }
  });
  return found;
}"""


def test_browser_no_page_wider_than_a_phone(billing: BillingLab, new_page: NewPage) -> None:
    """At 390 px (French, the longer words): no horizontal page scroll, no table cut."""
    too_wide = {}
    for page, path, _ in visit(new_page, every_page(billing), locale="fr", viewport=PHONE):
        page.wait_for_load_state("load")  # tables.js (deferred) has run
        if found := page.evaluate(TOO_WIDE_JS):
            too_wide[path] = found
    assert too_wide == {}


SCREENSHOT_PAGES: dict[str, Visit] = {
    "floor": ("mona", "/"),
    "login": (None, "/login"),
    "my-space": ("mona", "/me"),
    "member": ("mona", "/members/ada"),
    "machine": ("mona", "/machines/laser"),
    "stats": ("mona", "/stats"),
    "open-data": ("mona", "/open-data"),
    "billing": ("tess", "/billing"),
    "billing-period": ("tess", "/billing/periods/{period}"),
    "billing-statement": ("tess", "/billing/statements/{draft}"),
    "my-statement": ("ada", "/me/statements/{approved}"),
    "my-credits": ("ada", "/me/credits"),
    "my-claims": ("ada", "/me/claims"),
    "claims": ("mona", "/claims"),
}


@pytest.mark.skipif(not os.environ.get(SCREENSHOTS_ENV), reason=f"{SCREENSHOTS_ENV} not set")
@pytest.mark.parametrize("locale", ["fr", "en"])
def test_browser_screenshots_of_the_main_pages(
    billing: BillingLab, new_page: NewPage, locale: str
) -> None:
    ids = {"period": billing.period_id, "draft": billing.draft_statement_id,
           "approved": billing.approved_statement_id}  # fmt: skip
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    names = {path.format(**ids): name for name, (_, path) in SCREENSHOT_PAGES.items()}
    visits = [(who, path.format(**ids)) for who, path in SCREENSHOT_PAGES.values()]
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        for page, path, status in visit(new_page, visits, locale=locale, viewport=viewport):
            assert status == 200, path
            page.wait_for_load_state("load")
            page.screenshot(path=str(SCREENSHOTS / f"{names[path]}-{locale}-{size_name}.png"))


def test_browser_screenshots_are_in_the_repository_and_linked_from_the_readme() -> None:
    readme = (SCREENSHOTS.parents[1] / "README.md").read_text()
    expected = [f"{name}-{locale}-{size}.png" for name in SCREENSHOT_PAGES
                for locale in ("en", "fr") for size in ("desktop", "phone")]  # fmt: skip
    assert [f for f in expected if not (SCREENSHOTS / f).exists()] == []
    assert [f for f in expected if f"(docs/screenshots/{f})" not in readme] == []


def test_browser_pages_break_no_self_only_csp(billing: BillingLab, new_page: NewPage) -> None:
    """No page (nor the API docs) needs an inline script or style or a foreign asset."""
    refused: list[str] = []

    def watched(**options: Any) -> Any:
        page = new_page(**options)
        page.on(
            "console", lambda m: refused.append(m.text) if "Content Security" in m.text else None
        )
        # A navigation away aborts what the page still loads (the floor's event stream):
        # not a refusal. Blocked by CSP or by the offline rule are.
        page.on(
            "requestfailed",
            lambda r: None if r.failure == "net::ERR_ABORTED" else refused.append(r.url),
        )
        return page

    visits = [*every_page(billing), ("mona", "/docs"), ("mona", "/redoc")]
    statuses = [status for _page, _path, status in visit(watched, visits)]
    assert statuses.count(200) == len(visits) - 1  # all but /no-such-page
    assert refused == []


def test_browser_api_docs_render_offline(new_page: NewPage) -> None:
    page = new_page()
    page.goto("/docs")
    page.locator(".swagger-ui .info .title", has_text="fablab-monitor").wait_for()
    page.locator(".opblock-summary-path", has_text="/api/machines").first.wait_for()
    page.goto("/redoc")
    page.locator("h1", has_text="fablab-monitor").wait_for()
