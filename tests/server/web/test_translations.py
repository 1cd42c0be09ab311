"""The gettext catalogs: complete, compiled, and every page translated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from dashboards import TRANSLATIONS_DIR
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


def _main_text(html: str) -> str:
    found = re.search(r"<main[^>]*>(.*?)</main>", html, re.S)
    assert found, "page without main"
    return re.sub(r"<[^>]+>|\s+", " ", found.group(1)).strip()


def test_translations_every_page_renders_in_both_languages(
    browser: TestClient, login: Login
) -> None:
    login("mona")
    untranslated = []
    paths = PUBLIC_PAGES[:5] + MAKER_PAGES + TRAINER_PAGES + MANAGER_PAGES + TREASURER_PAGES
    for path in paths:
        if path in TREASURER_PAGES and path == TREASURER_PAGES[0]:
            browser.cookies.clear()
            login("tess")
        pages = {}
        for locale in LOCALES:
            browser.cookies.set("fablab_lang", locale)
            response = browser.get(path)
            assert response.status_code == 200, (locale, path)
            assert f'<html lang="{locale}">' in response.text
            pages[locale] = response.text
        if _main_text(pages["fr"]) == _main_text(pages["en"]):
            untranslated.append(path)
    assert untranslated == []
