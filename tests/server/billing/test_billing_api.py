"""Through the HTTP API: nothing approved can change, every adjustment is audited."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.adapters.orm_billing import (
    BillingAdjustment,
    BillingLedgerEntry,
    BillingLine,
    BillingStatement,
)
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from tests.server.billing.conftest import AddSession
from tests.server.billing.test_worked_example import build_worked_example
from tests.server.conftest import Headers

WRITE = {"POST", "PUT", "PATCH", "DELETE"}

BODIES: dict[str, dict[str, Any]] = {
    "/api/billing/tariffs": {"id": "extra", "name": "Extra", "machine_ids": ["laser"]},
    "/api/billing/tariffs/{tariff_id}": {"name": "Renamed", "machine_ids": ["cnc"]},
    "/api/billing/rates": {
        "tariff_id": "cutting",
        "valid_from": "2026-10-02",
        "unlocked_per_hour": "99.00",
    },
    "/api/billing/categories/{category_id}": {"multiplier": "3"},
    "/api/billing/periods": {"starts_on": "2026-10-01"},
    "/api/billing/statements/{statement_id}/adjust": {
        "session_id": "s1",
        "amount": "0.00",
        "reason": "try to change it",
    },
    "/api/billing/statements/{statement_id}/credit-notes": {"amount": "1.00", "reason": "fix"},
    "/api/billing/contribution-types": {
        "id": "hosting",
        "name": "Hosting",
        "unit": "hour",
        "kind": "money",
        "value": 500,
    },
    "/api/billing/contribution-types/{type_id}": {"value": 9999, "active": False},
    "/api/billing/claims": {
        "contribution_type_id": "recipe",
        "quantity": 1,
        "description": "another recipe",
        "member_id": "ada",
    },
    "/api/billing/claims/{claim_id}/decision": {"approve": False, "reason": "changed my mind"},
    "/api/billing/ledger/entries": {
        "member_id": "ada",
        "kind": "adjust",
        "amount": "-1.00",
        "reason": "try",
    },
}


def _frozen(lab: ServerRuntime) -> dict[str, list[tuple[Any, ...]]]:
    """Every approved statement, its lines, every ledger entry and adjustment, as values."""

    def rows(model: Any, *where: Any) -> list[tuple[Any, ...]]:
        with lab.new_uow() as uow:
            key = model.__table__.primary_key.columns
            found = uow.session.scalars(select(model).where(*where).order_by(*key)).all()
            return [tuple(getattr(r, c.key) for c in model.__table__.columns) for r in found]

    approved = select(BillingStatement.id).where(BillingStatement.status == "approved")
    return {
        "statements": rows(BillingStatement, BillingStatement.status == "approved"),
        "lines": rows(BillingLine, BillingLine.statement_id.in_(approved)),
        "ledger": rows(BillingLedgerEntry),
        "adjustments": rows(BillingAdjustment),
    }


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def test_billing_api_no_write_route_changes_approved_statements_or_ledger(
    lab: ServerRuntime, add_session: AddSession, client: TestClient, auth: Headers
) -> None:
    period = build_worked_example(lab, add_session)
    before = _frozen(lab)
    assert before["statements"] and before["lines"] and before["ledger"]
    headers = auth("root")  # the admin holds every role
    with lab.new_uow() as uow:
        statements = [s.id for s in uow.billing.statements(period_id=period)]
        claims = [c.id for c in uow.billing.claims()]
    values = {
        "statement_id": statements,
        "period_id": [period],
        "claim_id": claims,
        "tariff_id": ["cutting"],
        "category_id": ["student"],
        "type_id": ["recipe"],
    }
    tried = 0
    # Every write route of the billing API, as the OpenAPI document lists them.
    paths = client.get("/openapi.json").json()["paths"]
    for template, operations in paths.items():
        if not template.startswith("/api/billing"):
            continue
        for method in {m.upper() for m in operations} & WRITE:
            targets = [template]
            for name in re.findall(r"{(\w+)}", template):
                targets = [t.replace(f"{{{name}}}", str(v)) for t in targets for v in values[name]]
            for path in targets:
                response = client.request(method, path, json=BODIES.get(template), headers=headers)
                assert response.status_code < 500, (method, path, response.text)
                tried += 1
    assert tried >= 20
    after = _frozen(lab)
    for table, rows in before.items():  # new credit notes and entries may follow
        assert after[table][: len(rows)] == rows, table
    assert after["adjustments"] == before["adjustments"] == []


def test_billing_api_adjustments_are_in_the_audit_log(
    lab: ServerRuntime, add_session: AddSession, client: TestClient, auth: Headers
) -> None:
    from datetime import UTC, datetime

    add_session("m1", "ada", "laser", datetime(2026, 10, 8, 12, tzinfo=UTC), 600)
    tess = auth("tess")
    assert (
        client.post(
            "/api/billing/tariffs",
            json={"id": "cutting", "name": "C", "machine_ids": ["laser"]},
            headers=tess,
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/api/billing/rates",
            json={"tariff_id": "cutting", "valid_from": "2026-10-01", "unlocked_per_hour": "12"},
            headers=tess,
        ).status_code
        == 201
    )
    period = client.post("/api/billing/periods", json={"starts_on": "2026-10-01"}, headers=tess)
    period_id = period.json()["id"]
    client.post(f"/api/billing/periods/{period_id}/compute", headers=tess)
    (statement,) = client.get("/api/billing/statements", headers=tess).json()
    adjusted = client.post(
        f"/api/billing/statements/{statement['id']}/adjust",
        json={"session_id": "m1", "amount": "1.00", "reason": "short test cut"},
        headers=tess,
    )
    assert adjusted.status_code == 200, adjusted.text
    assert adjusted.json()["lines"][0]["adjustment_reason"] == "short test cut"
    approved = client.post(
        f"/api/billing/statements/{adjusted.json()['id']}/approve", headers=tess
    ).json()
    client.post(
        f"/api/billing/statements/{approved['id']}/credit-notes",
        json={"amount": "0.50", "reason": "goodwill"},
        headers=tess,
    )
    client.post(
        "/api/billing/ledger/entries",
        json={"member_id": "ada", "kind": "topup", "amount": "5.00", "reason": "cash"},
        headers=tess,
    )
    audit = client.get("/api/audit", params={"limit": 500}, headers=auth("mona")).json()
    actions = {e["action"] for e in audit["items"] if e["actor_id"] == "tess"}
    assert {
        "billing.line.adjust",
        "billing.statement.approve",
        "billing.credit_note.issue",
        "billing.ledger.topup",
        "billing.rate.create",
        "billing.period.open",
    } <= actions


def test_billing_api_maker_sees_only_own_approved_statements(
    lab: ServerRuntime, add_session: AddSession, client: TestClient, auth: Headers
) -> None:
    period = build_worked_example(lab, add_session)
    mine = client.get("/api/billing/statements", headers=auth("nora")).json()
    assert {s["member_id"] for s in mine} == {"nora"} and len(mine) == 2
    with lab.new_uow() as uow:
        (ada,) = uow.billing.statements(period_id=period, member_id="ada")
    assert client.get(f"/api/billing/statements/{ada.id}", headers=auth("nora")).status_code == 404
    page = client.get(
        f"/api/billing/statements/{mine[0]['id']}/html", params={"lang": "fr"}, headers=auth("nora")
    )
    assert page.status_code == 200 and "Net à payer" in page.text and "51,00 EUR" in page.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/billing/ledger/entries",
            {"member_id": "ada", "kind": "topup", "amount": "5.00", "reason": "cash\x00"},
        ),
        (
            "/api/billing/contribution-types",
            {"id": "hosting", "name": "Host\x00ing", "unit": "hour", "kind": "money", "value": 1},
        ),
    ],
)
def test_billing_api_text_with_a_control_character_is_refused(
    client: TestClient, auth: Headers, path: str, body: dict[str, Any]
) -> None:
    answer = client.post(path, json=body, headers=auth("root"))
    assert answer.status_code == 422


def test_billing_api_prepaid_balance_of_a_member_id_with_a_nul_byte_is_refused(
    client: TestClient, auth: Headers
) -> None:
    # PostgreSQL cannot hold a NUL byte: the lookup answered 500 (found by the fuzz).
    answer = client.get("/api/billing/prepaid", params={"member_id": "\x00"}, headers=auth("root"))
    assert answer.status_code == 422


def test_billing_api_period_outside_the_billing_dates_is_a_400(
    client: TestClient, auth: Headers
) -> None:
    answer = client.post(
        "/api/billing/periods", json={"starts_on": "1999-12-01"}, headers=auth("root")
    )
    assert answer.status_code == 400 and "2000-01-01" in answer.json()["detail"]


def test_billing_api_amount_is_a_decimal_string_in_the_schema_and_the_api(
    client: TestClient, auth: Headers
) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CreditNoteCreate"]
    assert schema["properties"]["amount"]["type"] == "string"
    assert schema["additionalProperties"] is False
    for amount in (1.5, "1.505", "1e3"):
        answer = client.post(
            "/api/billing/statements/1/credit-notes",
            json={"amount": amount, "reason": "fix"},
            headers=auth("root"),
        )
        assert answer.status_code == 422, amount
