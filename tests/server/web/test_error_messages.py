"""The lab's refusals reach a form in the page's language."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.domain.errors import ConflictError, DomainError
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from server.web.error_messages import known_refusal, translate_refusal
from server.web.i18n import gettext_for
from tests.server.web.conftest import Login

TESS = Principal("tess", frozenset({Role.TREASURER}))
MONA = Principal("mona", frozenset({Role.MANAGER}))


def _open_october(browser: TestClient, csrf: str) -> TestClient:
    return browser.post("/billing/periods", data={"csrf_token": csrf, "starts_on": "2026-10-01"},
                        follow_redirects=False)  # fmt: skip


def test_error_messages_french_form_error_is_french(browser: TestClient, login: Login) -> None:
    csrf = login("tess")
    assert _open_october(browser, csrf).status_code == 303
    browser.cookies.set("fablab_lang", "fr")
    again = _open_october(browser, csrf)
    assert again.status_code == 400
    assert "Cette période chevauche la période" in again.text
    assert "overlaps" not in again.text


def test_error_messages_english_form_error_stays_english(
    browser: TestClient, login: Login
) -> None:
    csrf = login("tess")
    _open_october(browser, csrf)
    assert "This period overlaps period" in _open_october(browser, csrf).text


def _refusal_of(lab: ServerRuntime, command: object) -> DomainError:
    with pytest.raises(DomainError) as raised:
        lab.bus.handle(command)
    return raised.value


def test_error_messages_known_refusals_match_what_the_service_raises(lab: ServerRuntime) -> None:
    """The wording the mapping recognises is the service's own (a changed wording would
    fall back to the untranslated message)."""
    policy = lab.settings.billing_policy()
    lab.bus.handle(bc.OpenPeriod(date(2026, 10, 1), policy, actor=TESS))
    lab.bus.handle(bc.AddContributionType("recipe", "Recipe", "item", "money", 100, actor=TESS))
    refused = [
        _refusal_of(lab, bc.OpenPeriod(date(2026, 10, 15), policy, actor=TESS)),
        _refusal_of(lab, cmds.AddMember("Zed", category="nope", actor=MONA)),
        _refusal_of(lab, bc.SubmitClaim("ada", "recipe", 0, "x", actor=MONA)),
        _refusal_of(lab, bc.SubmitClaim("ada", "recipe", 1, " ", actor=MONA)),
        _refusal_of(lab, bc.SetCategoryMultiplier("member", 110_000, actor=TESS)),
    ]
    assert [str(e) for e in refused if known_refusal(str(e), type(e)) is None] == []


def test_error_messages_unknown_refusal_says_its_kind_then_the_domain_words() -> None:
    text = translate_refusal(gettext_for("fr"), "a rule added later", ConflictError)
    assert text == "Cela contredit ce que le lab a déjà enregistré. (a rule added later)"
