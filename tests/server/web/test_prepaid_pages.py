"""The prepaid option on the treasurer's and the maker's pages."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.bootstrap import ServerRuntime
from server.service_layer import prepaid
from tests.server.web.conftest import Login
from tests.server.web.test_billing_pages import _switch, priced  # noqa: F401 - the fixture


def test_prepaid_pages_treasurer_makes_a_category_prepaid_and_records_a_top_up(
    priced: ServerRuntime, browser: TestClient, login: Login  # noqa: F811 - the fixture
) -> None:
    csrf = login("tess")
    form = {"csrf_token": csrf, "prepaid_on": "on", "threshold": "5,00", "overdraft": "2.00"}
    assert browser.post("/billing/categories/member/prepaid", data=form).status_code == 200
    topup = {"csrf_token": csrf, "member_id": "ada", "amount": "20.00", "reason": "cash"}
    page = browser.post("/billing/topups", data=topup)
    assert page.status_code == 200
    with priced.new_uow() as uow:
        status = prepaid.statuses(uow, {"ada"})["ada"]
        assert (status.rule.threshold_cents, status.rule.overdraft_cents) == (500, 200)
        assert status.balance_cents == 2000 - 1200  # ada's hour at 12.00 is not approved yet
    assert "8.00" in page.text.replace("\xa0", " ")


def test_prepaid_pages_bad_top_up_shows_the_error_and_records_nothing(
    priced: ServerRuntime, browser: TestClient, login: Login  # noqa: F811 - the fixture
) -> None:
    csrf = login("tess")
    page = browser.post("/billing/topups", data={"csrf_token": csrf, "member_id": "ada",
                                                 "amount": "lots", "reason": "cash"})  # fmt: skip
    assert page.status_code == 400
    assert 'id="f-amount-error"' in page.text
    page = browser.post("/billing/topups", data={"csrf_token": csrf, "member_id": "nobody",
                                                 "amount": "5", "reason": "cash"})  # fmt: skip
    assert page.status_code == 400
    assert 'id="f-member_id-error"' in page.text
    with priced.new_uow() as uow:
        assert uow.billing.chain("ada") == []


def test_prepaid_pages_maker_sees_the_prepaid_balance(
    priced: ServerRuntime, browser: TestClient, login: Login  # noqa: F811 - the fixture
) -> None:
    csrf = login("tess")
    form = {"csrf_token": csrf, "prepaid_on": "on", "threshold": "5.00", "overdraft": "0"}
    browser.post("/billing/categories/member/prepaid", data=form)
    _switch(browser, login, "ada")
    page = browser.get("/me/credits")
    assert page.status_code == 200
    assert "Your balance is below the threshold" in page.text
