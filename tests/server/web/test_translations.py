"""The gettext catalogs: complete, compiled, and every page translated."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from dashboards import TRANSLATIONS_DIR
from server.adapters.orm import UsageSession
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import billing_commands as bc
from server.web.i18n import negotiate, parse_accept_language
from tests.server.web.conftest import Login
from tests.server.web.test_pages_render import (
    MAKER_PAGES,
    MANAGER_PAGES,
    PUBLIC_PAGES,
    TRAINER_PAGES,
    TREASURER_PAGES,
)

ROOT = Path(__file__).resolve().parents[3]
LOCALES = ("fr", "en")
METHODS = [
    ("server/web/**.py", "python"),
    ("dashboards/templates/**.html", "jinja2"),
    ("dashboards/templates/**.txt", "jinja2"),
]
OPTIONS = {"dashboards/templates/**": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "tr": (2,), "N_": None}


def _catalog(locale: str):  # type: ignore[no-untyped-def]
    with (TRANSLATIONS_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=locale)


def _source_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), METHODS, OPTIONS, KEYWORDS
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_translations_catalogs_hold_every_message_of_the_source() -> None:
    source = _source_messages()
    assert len(source) > 200
    for locale in LOCALES:
        ids = {m.id for m in _catalog(locale) if m.id}
        assert source - ids == set(), f"run scripts/translations update ({locale})"


@pytest.mark.parametrize("locale", LOCALES)
def test_translations_catalog_has_no_untranslated_or_fuzzy_message(locale: str) -> None:
    catalog = _catalog(locale)
    untranslated = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
    assert untranslated == []
    assert [(m.id, errors) for m, errors in catalog.check()] == []


@pytest.mark.parametrize("locale", LOCALES)
def test_translations_compiled_mo_matches_po(locale: str) -> None:
    with (TRANSLATIONS_DIR / locale / "LC_MESSAGES" / "messages.mo").open("rb") as f:
        compiled = {m.id: m.string for m in read_mo(f) if m.id}
    source = {m.id: m.string for m in _catalog(locale) if m.id}
    assert compiled == source, "run scripts/translations compile"


def test_translations_accept_language_order_and_quality() -> None:
    assert parse_accept_language("en;q=0.4, fr-CH, de;q=0.9, *;q=0.1") == ["fr-CH", "de", "en"]
    assert negotiate(None, "de-DE, fr;q=0.8", "en") == "fr"
    assert negotiate("en", "fr", "fr") == "en"
    assert negotiate(None, "de", "fr") == "fr"


def _main_text(page: str) -> str:
    found = re.search(r"<main[^>]*>(.*?)</main>", page, re.S)
    assert found, "page without main"
    return html.unescape(re.sub(r"<[^>]+>|\s+", " ", found.group(1))).strip()


def _english_leftovers() -> list[str]:
    """Messages of three words or more that French writes differently: none of them may
    show on a French page."""
    return [
        m.id for m in _catalog("fr")
        if isinstance(m.id, str) and m.string != m.id and "%" not in m.id
        and len(m.id.split()) >= 3
    ]  # fmt: skip


TESS = Principal("tess", frozenset({Role.TREASURER}))
MONA = Principal("mona", frozenset({Role.MANAGER}))


def _billing_pages(lab: ServerRuntime) -> dict[str, list[str]]:
    """A computed October 2026 (Ada's statement approved, Nora's a draft) and claims;
    the billing pages that show them, per viewer."""
    bus, policy = lab.bus, lab.settings.billing_policy()
    bus.handle(bc.AddTariff("cutting", "Laser cutting", ("laser",), actor=TESS))
    bus.handle(bc.AddRate("cutting", date(2026, 10, 1), policy, 1200, actor=TESS))
    bus.handle(bc.AddContributionType("recipe", "Recipe", "item", "minutes", 30, actor=TESS))
    start = datetime(2026, 10, 8, 10, tzinfo=UTC)
    with lab.new_uow() as uow:
        for member_id in ("ada", "nora"):
            uow.sessions.add(UsageSession(
                id=f"s-{member_id}", machine_id="laser", controller_id="laser",
                member_id=member_id, reported_member_id=member_id, started_at=start,
                ended_at=start + timedelta(hours=1), elapsed_seconds=3600.0, busy_seconds=0.0,
            ))  # fmt: skip
        uow.commit()
    period = bus.handle(bc.OpenPeriod(date(2026, 10, 1), policy, actor=TESS))
    bus.handle(bc.ComputePeriod(period, policy, actor=TESS))
    with lab.new_uow() as uow:
        ada = uow.billing.statements(period_id=period, member_id="ada")[0].id
        nora = uow.billing.statements(period_id=period, member_id="nora")[0].id
    bus.handle(bc.ApproveStatement(ada, policy, actor=TESS))
    for quantity, approve in ((1, True), (2, None)):
        claim = bus.handle(bc.SubmitClaim("ada", "recipe", quantity, "a recipe", actor=MONA))
        if approve:
            bus.handle(bc.DecideClaim(claim, True, "thanks", policy, actor=MONA))
    return {
        "tess": ["/billing", f"/billing/periods/{period}", f"/billing/statements/{ada}",
                 f"/billing/statements/{nora}"],
        "ada": ["/me/statements", f"/me/statements/{ada}", "/me/credits", "/me/claims"],
        "mona": ["/claims"],
    }  # fmt: skip


def test_translations_every_page_renders_in_both_languages(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    """Every page (billing pages with their data too) in French and English: not the
    same text, and no English message left on the French page."""
    viewers = {
        "mona": PUBLIC_PAGES[:5] + MAKER_PAGES + TRAINER_PAGES + MANAGER_PAGES,
        "tess": TREASURER_PAGES,
    }
    for member_id, paths in _billing_pages(lab).items():
        viewers[member_id] = (*viewers.get(member_id, ()), *paths)
    leftovers = _english_leftovers()
    untranslated: dict[str, list[str]] = {}
    for member_id, paths in viewers.items():
        browser.cookies.clear()
        login(member_id)
        for path in paths:
            pages = {}
            for locale in LOCALES:
                browser.cookies.set("fablab_lang", locale)
                response = browser.get(path)
                assert response.status_code == 200, (locale, path)
                assert f'<html lang="{locale}">' in response.text
                pages[locale] = _main_text(response.text)
            english = [m for m in leftovers if m in pages["fr"]]
            if pages["fr"] == pages["en"] or english:
                untranslated[path] = english
    assert untranslated == {}
