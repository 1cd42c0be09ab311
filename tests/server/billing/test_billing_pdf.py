"""Statements as PDF (WeasyPrint): the document parses and holds the statement's number,
lines and total; only who may see the statement gets it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pypdf
import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from tests.server.billing.conftest import AddSession
from tests.server.billing.test_worked_example import build_worked_example
from tests.server.conftest import Headers


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


@pytest.fixture
def october(lab: ServerRuntime, add_session: AddSession) -> dict[str, int]:
    """The worked example's statement id of each member (October, closed)."""
    period = build_worked_example(lab, add_session)
    with lab.new_uow() as uow:
        found = uow.billing.statements(period_id=period, kind="statement")
        return {s.member_id: s.id for s in found}


def _text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_billing_pdf_holds_the_statement_number_lines_and_total(
    client: TestClient, auth: Headers, october: dict[str, int]
) -> None:
    answer = client.get(
        f"/api/billing/statements/{october['ada']}/pdf",
        params={"lang": "fr"},
        headers=auth("ada"),
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["cache-control"] == "no-store"
    assert 'filename="F000001.pdf"' in answer.headers["content-disposition"]
    text = _text(answer.content)
    assert "Relevé F000001" in text
    for amount in ("15,00 EUR", "7,50 EUR", "66,00 EUR", "88,50 EUR", "8,33 EUR", "80,17 EUR"):
        assert amount in text
    assert text.count("laser") == 2 and text.count("cnc") == 1


def test_billing_pdf_of_another_members_statement_is_not_found(
    client: TestClient, auth: Headers, october: dict[str, int]
) -> None:
    answer = client.get(f"/api/billing/statements/{october['ada']}/pdf", headers=auth("nora"))
    assert answer.status_code == 404
