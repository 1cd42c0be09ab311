"""Billing pages: the treasurer's periods and exports, makers' statements and claims,
the manager's decisions; every change goes through the billing commands."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from server.adapters.orm import UsageSession
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import billing_commands as bc
from tests.server.web.conftest import Login

TESS = Principal("tess", frozenset({Role.TREASURER}))
OCTOBER = datetime(2026, 10, 8, 10, tzinfo=UTC)


def _session(lab: ServerRuntime, session_id: str, member_id: str, seconds: float) -> None:
    with lab.new_uow() as uow:
        uow.sessions.add(
            UsageSession(
                id=session_id, machine_id="laser", controller_id="laser", member_id=member_id,
                reported_member_id=member_id, started_at=OCTOBER,
                ended_at=OCTOBER + timedelta(seconds=seconds), elapsed_seconds=seconds,
                busy_seconds=0.0,
            )
        )  # fmt: skip
        uow.commit()


@pytest.fixture
def priced(lab: ServerRuntime) -> ServerRuntime:
    """Laser at 12.00 per unlocked hour from 1 October 2026; an hour each for ada and nora;
    a claimable contribution type `recipe` (30 machine minutes per item)."""
    policy = lab.settings.billing_policy()
    lab.bus.handle(bc.AddTariff("cutting", "Laser cutting", ("laser",), actor=TESS))
    lab.bus.handle(bc.AddRate("cutting", date(2026, 10, 1), policy, 1200, 0, 0, 1, 0, actor=TESS))
    lab.bus.handle(
        bc.AddContributionType("recipe", "Recipe published", "item", "minutes", 30, actor=TESS)
    )
    _session(lab, "s-ada", "ada", 3600)
    _session(lab, "s-nora", "nora", 3600)
    return lab


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def _switch(browser: TestClient, login: Login, member_id: str) -> str:
    """Log out (drop the cookies) and log in as another member; returns the CSRF token."""
    browser.cookies.clear()
    return login(member_id)


def _closed_period(browser: TestClient, login: Login) -> int:
    csrf = login("tess")
    opened = browser.post(
        "/billing/periods", data={"csrf_token": csrf, "starts_on": "2026-10-01"},
        follow_redirects=False,
    )  # fmt: skip
    assert opened.status_code == 303, opened.text
    period = int(opened.headers["location"].rsplit("/", 1)[1])
    computed = browser.post(f"/billing/periods/{period}/compute", data={"csrf_token": csrf})
    assert computed.status_code == 200 and "Ada Lovelace" in computed.text
    closed = browser.post(f"/billing/periods/{period}/close", data={"csrf_token": csrf})
    assert closed.status_code == 200 and "Compute the statements" not in closed.text
    return period


def test_billing_pages_treasurer_computes_approves_and_downloads_csv(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    with priced.new_uow() as uow:
        statements = uow.billing.statements(period_id=period)
        assert {s.status for s in statements} == {"approved"}
        assert {s.member_id: s.charges_cents for s in statements} == {"ada": 1200, "nora": 1200}
    csv = browser.get(f"/billing/periods/{period}/export?format=csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    assert "s-ada" in csv.text and "s-nora" in csv.text
    fec = browser.get(f"/billing/periods/{period}/export?format=fec")
    assert fec.status_code == 200 and "|" in fec.text


def test_billing_pages_period_money_is_written_the_locale_way(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    browser.cookies.set("fablab_lang", "fr")
    page = browser.get(f"/billing/periods/{period}").text
    assert "24,00\u00a0€" in page
    browser.cookies.set("fablab_lang", "en")
    assert "€24.00" in browser.get(f"/billing/periods/{period}").text


def test_billing_pages_open_period_with_bad_day_shows_error_next_to_field(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("tess")
    page = browser.post("/billing/periods", data={"csrf_token": csrf, "starts_on": "tomorrow"})
    assert page.status_code == 400
    assert 'id="f-starts_on-error"' in page.text and "YYYY-MM-DD" in page.text


def test_billing_pages_maker_sees_own_statement_not_another(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    with priced.new_uow() as uow:
        ids = {s.member_id: s.id for s in uow.billing.statements(period_id=period)}
    _switch(browser, login, "ada")
    listing = browser.get("/me/statements").text
    assert f"/me/statements/{ids['ada']}" in listing
    assert f"/me/statements/{ids['nora']}" not in listing
    assert browser.get(f"/me/statements/{ids['ada']}").status_code == 200
    assert browser.get(f"/me/statements/{ids['nora']}").status_code == 404
    assert browser.get(f"/billing/statements/{ids['ada']}").status_code == 403
    assert browser.get(f"/billing/periods/{period}/export").status_code == 403


def test_billing_pages_maker_downloads_own_statement_as_pdf(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    with priced.new_uow() as uow:
        ids = {s.member_id: s.id for s in uow.billing.statements(period_id=period)}
    _switch(browser, login, "ada")
    page = browser.get(f"/me/statements/{ids['ada']}").text
    link = re.search(r'href="(/api/billing/statements/\d+/pdf\?lang=\w+)" download', page)
    assert link is not None
    pdf = browser.get(link.group(1).replace("&amp;", "&"))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")


def test_billing_pages_maker_claims_and_manager_approves(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("ada")
    claim = {"csrf_token": csrf, "contribution_type_id": "recipe", "quantity": "2",
             "description": "Recipe for plywood", "link": ""}  # fmt: skip
    submitted = browser.post("/me/claims", data=claim)
    assert submitted.status_code == 200 and "Recipe for plywood" in submitted.text
    with priced.new_uow() as uow:
        (pending,) = uow.billing.claims(member_id="ada", status="pending")
        claim_id = pending.id
    csrf = _switch(browser, login, "mona")
    assert "Recipe for plywood" in browser.get("/claims").text
    decided = browser.post(
        f"/claims/{claim_id}/decision",
        data={"csrf_token": csrf, "decision": "approve", "reason": "published on the wiki"},
    )
    assert decided.status_code == 200
    with priced.new_uow() as uow:
        assert uow.billing.claim(claim_id).status == "approved"  # type: ignore[union-attr]
        per_minute = priced.settings.billing_policy().credit_cents_per_minute
        assert [e.amount_cents for e in uow.billing.chain("ada")] == [60 * per_minute]
    _switch(browser, login, "ada")
    assert "published on the wiki" in browser.get("/me/claims").text


def test_billing_pages_claim_without_description_shows_error_next_to_field(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("ada")
    data = {"csrf_token": csrf, "contribution_type_id": "recipe", "quantity": "0"}
    page = browser.post("/me/claims", data=data)
    assert page.status_code == 400
    assert 'id="f-description-error"' in page.text and 'id="f-quantity-error"' in page.text
    with priced.new_uow() as uow:
        assert list(uow.billing.claims(member_id="ada")) == []


def test_billing_pages_maker_may_not_decide_claims(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("ada")
    claim = {"csrf_token": csrf, "contribution_type_id": "recipe", "quantity": "1",
             "description": "mine"}  # fmt: skip
    browser.post("/me/claims", data=claim)
    with priced.new_uow() as uow:
        (pending,) = uow.billing.claims(member_id="ada")
    decided = browser.post(
        f"/claims/{pending.id}/decision",
        data={"csrf_token": csrf, "decision": "approve", "reason": "me"},
    )
    assert decided.status_code == 403
    with priced.new_uow() as uow:
        assert uow.billing.claim(pending.id).status == "pending"  # type: ignore[union-attr]


def test_billing_pages_treasurer_adjusts_a_draft_line_with_reason(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("tess")
    browser.post("/billing/periods", data={"csrf_token": csrf, "starts_on": "2026-10-01"})
    with priced.new_uow() as uow:
        (period,) = uow.billing.periods()
    browser.post(f"/billing/periods/{period.id}/compute", data={"csrf_token": csrf})
    with priced.new_uow() as uow:
        (draft,) = uow.billing.statements(period_id=period.id, member_id="ada")
    page = browser.post(
        f"/billing/statements/{draft.id}/adjust",
        data={"csrf_token": csrf, "session_id": "s-ada", "amount": "5,50", "reason": "test cut"},
    )
    assert page.status_code == 200, page.text
    with priced.new_uow() as uow:
        (adjusted,) = uow.billing.statements(period_id=period.id, member_id="ada")
        assert adjusted.charges_cents == 550


def test_billing_pages_chart_shows_charges_and_credits_per_month(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    mona = Principal("mona", frozenset({Role.MANAGER}))
    policy = priced.settings.billing_policy()
    claim = priced.bus.handle(bc.SubmitClaim("ada", "recipe", 1, "a recipe", actor=mona))
    december = datetime(2026, 12, 2, 12, tzinfo=UTC)
    priced.bus.handle(bc.DecideClaim(claim, True, "ok", policy, actor=mona, at=december))
    _closed_period(browser, login)
    page = browser.get("/billing").text
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg and "October 2026: 24.00" in svg.group(0)
    credit = 30 * policy.credit_cents_per_minute / 100
    assert f"December 2026: {credit:.2f}" in svg.group(0)


def test_billing_pages_treasurer_adds_a_rate_and_sets_a_category_multiplier(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("tess")
    rate = {"csrf_token": csrf, "tariff_id": "cutting", "valid_from": "2026-11-01",
            "unlocked_per_hour": "15,00", "busy_per_hour": "", "minimum_charge": "2.00",
            "rounding_minutes": "15", "free_minutes": "0"}  # fmt: skip
    assert browser.post("/billing/rates", data=rate).status_code == 200
    with priced.new_uow() as uow:
        category = uow.categories.all()[0].id
    page = browser.post(f"/billing/categories/{category}", data={"csrf_token": csrf,
                        "multiplier": "0,5"})  # fmt: skip
    assert page.status_code == 200
    with priced.new_uow() as uow:
        newest = uow.billing.rates("cutting")[-1]
        assert (newest.valid_from, newest.unlocked_cents_per_hour) == (date(2026, 11, 1), 1500)
        assert (newest.minimum_cents, newest.rounding_minutes) == (200, 15)
        assert uow.billing.multipliers()[category] == 5_000


def test_billing_pages_bad_rate_shows_errors_next_to_fields_and_adds_nothing(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("tess")
    rate = {"csrf_token": csrf, "tariff_id": "cutting", "valid_from": "2026-11-01",
            "unlocked_per_hour": "lots", "rounding_minutes": "0"}  # fmt: skip
    page = browser.post("/billing/rates", data=rate)
    assert page.status_code == 400
    assert 'id="f-unlocked_per_hour-error"' in page.text
    assert 'id="f-rounding_minutes-error"' in page.text
    with priced.new_uow() as uow:
        assert len(uow.billing.rates("cutting")) == 1


def test_billing_pages_treasurer_issues_a_credit_note_on_an_approved_statement(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    with priced.new_uow() as uow:
        (approved,) = uow.billing.statements(period_id=period, member_id="ada")
    csrf = _csrf(browser.get(f"/billing/statements/{approved.id}").text)
    page = browser.post(
        f"/billing/statements/{approved.id}/credit-note",
        data={"csrf_token": csrf, "note_amount": "2.00", "note_reason": "goodwill"},
    )
    assert page.status_code == 200 and "goodwill" in page.text
    with priced.new_uow() as uow:
        notes = uow.billing.statements(member_id="ada", kind="credit_note")
        assert [(n.refers_to_id, n.reason) for n in notes] == [(approved.id, "goodwill")]


def test_billing_pages_navigation_links_follow_roles(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    login("tess")
    assert 'href="/billing"' in browser.get("/me").text
    _switch(browser, login, "ada")
    page = browser.get("/me").text
    assert 'href="/me/statements"' in page and 'href="/me/claims"' in page
    assert 'href="/billing"' not in page and 'href="/claims"' not in page


def test_billing_pages_with_data_render_in_both_languages_without_inline_code(
    priced: ServerRuntime, browser: TestClient, login: Login
) -> None:
    period = _closed_period(browser, login)
    with priced.new_uow() as uow:
        (ada,) = uow.billing.statements(period_id=period, member_id="ada")
    treasurer = ["/billing", f"/billing/periods/{period}", f"/billing/statements/{ada.id}"]
    maker = ["/me/statements", f"/me/statements/{ada.id}", "/me/credits", "/me/claims"]
    for member_id, paths in (("tess", treasurer), ("ada", maker), ("mona", ["/claims"])):
        _switch(browser, login, member_id)
        for path in paths:
            pages = {}
            for locale in ("en", "fr"):
                browser.cookies.set("fablab_lang", locale)
                response = browser.get(path)
                assert response.status_code == 200, (locale, path)
                html = response.text
                assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
                assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), path
                pages[locale] = re.sub(r"<[^>]+>|\s+", " ", html.split("<main", 1)[1])
            assert pages["en"] != pages["fr"], path
