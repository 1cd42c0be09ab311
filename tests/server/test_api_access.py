"""Every route x every role: who is let through, who is refused.

The table must name every route of the app: a new route without an entry fails here.
Allowed means neither 401 nor 403 (the request may still be refused for its content);
refused means 401 (anonymous), 403 (role) or 404 (another member's object). Never 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from tests.server.conftest import Headers, password_of

ANON, MAKER, TRAINER, MANAGER, TREASURER, ADMIN = (
    "anonymous",
    "nora",
    "tom",
    "mona",
    "tess",
    "root",
)
EVERYONE = {ANON, MAKER, TRAINER, MANAGER, TREASURER, ADMIN}
LOGGED_IN = EVERYONE - {ANON}
MANAGERS = {MANAGER, ADMIN}
TRAINERS = {TRAINER, MANAGER, ADMIN}
TREASURERS = {TREASURER, ADMIN}

Body = Callable[[str], Any]


@dataclass(frozen=True)
class Case:
    allowed: set[str]
    path: str | None = None  # concrete path when the route has parameters
    body: Body | None = None
    params: dict[str, Any] = field(default_factory=dict)
    content: Callable[[str], bytes] | None = None  # a raw body (CSV), instead of JSON


def _none(_: str) -> None:
    return None


_B = "/api/billing"
BILLING: dict[tuple[str, str], Case] = {
    ("GET", f"{_B}/tariffs"): Case(TREASURERS),
    ("POST", f"{_B}/tariffs"): Case(
        TREASURERS, body=lambda who: {"id": f"t-{who}", "name": "T", "machine_ids": ["laser"]}
    ),
    ("PATCH", f"{_B}/tariffs/{{tariff_id}}"): Case(
        TREASURERS, path=f"{_B}/tariffs/none", body=lambda _: {"name": "X"}
    ),
    ("GET", f"{_B}/rates"): Case(TREASURERS),
    ("POST", f"{_B}/rates"): Case(
        TREASURERS,
        body=lambda _: {"tariff_id": "none", "valid_from": "2026-01-01", "unlocked_per_hour": "12"},
    ),
    ("GET", f"{_B}/categories"): Case(TREASURERS),
    ("PUT", f"{_B}/categories/{{category_id}}"): Case(
        TREASURERS, path=f"{_B}/categories/student", body=lambda _: {"multiplier": "0.5"}
    ),
    ("GET", f"{_B}/periods"): Case(TREASURERS),
    ("POST", f"{_B}/periods"): Case(TREASURERS, body=lambda who: {"starts_on": "2026-03-01"}),
    ("GET", f"{_B}/periods/{{period_id}}"): Case(TREASURERS, path=f"{_B}/periods/999"),
    ("POST", f"{_B}/periods/{{period_id}}/compute"): Case(
        TREASURERS, path=f"{_B}/periods/999/compute"
    ),
    ("POST", f"{_B}/periods/{{period_id}}/close"): Case(TREASURERS, path=f"{_B}/periods/999/close"),
    ("GET", f"{_B}/periods/{{period_id}}/totals"): Case(
        TREASURERS, path=f"{_B}/periods/999/totals"
    ),
    ("GET", f"{_B}/periods/{{period_id}}/export"): Case(
        TREASURERS, path=f"{_B}/periods/999/export", params={"format": "fec"}
    ),
    ("GET", f"{_B}/statements"): Case(LOGGED_IN),
    ("GET", f"{_B}/statements/{{statement_id}}"): Case(LOGGED_IN, path=f"{_B}/statements/999"),
    ("GET", f"{_B}/statements/{{statement_id}}/html"): Case(
        LOGGED_IN, path=f"{_B}/statements/999/html"
    ),
    ("GET", f"{_B}/statements/{{statement_id}}/pdf"): Case(
        LOGGED_IN, path=f"{_B}/statements/999/pdf"
    ),
    ("POST", f"{_B}/statements/{{statement_id}}/adjust"): Case(
        TREASURERS,
        path=f"{_B}/statements/999/adjust",
        body=lambda _: {"session_id": "s", "amount": "1.00", "reason": "r"},
    ),
    ("POST", f"{_B}/statements/{{statement_id}}/approve"): Case(
        TREASURERS, path=f"{_B}/statements/999/approve"
    ),
    ("POST", f"{_B}/statements/{{statement_id}}/credit-notes"): Case(
        TREASURERS,
        path=f"{_B}/statements/999/credit-notes",
        body=lambda _: {"amount": "1.00", "reason": "r"},
    ),
    ("GET", f"{_B}/contribution-types"): Case(LOGGED_IN),
    ("POST", f"{_B}/contribution-types"): Case(
        TREASURERS,
        body=lambda who: {
            "id": f"c-{who}",
            "name": "C",
            "unit": "hour",
            "kind": "money",
            "value": 100,
        },
    ),
    ("PATCH", f"{_B}/contribution-types/{{type_id}}"): Case(
        TREASURERS, path=f"{_B}/contribution-types/none", body=lambda _: {"value": 5}
    ),
    ("GET", f"{_B}/claims"): Case(LOGGED_IN),
    ("POST", f"{_B}/claims"): Case(
        LOGGED_IN,
        body=lambda _: {"contribution_type_id": "none", "quantity": 1, "description": "d"},
    ),
    ("POST", f"{_B}/claims/{{claim_id}}/decision"): Case(
        MANAGERS, path=f"{_B}/claims/999/decision", body=lambda _: {"approve": True, "reason": "r"}
    ),
    ("GET", f"{_B}/ledger"): Case(LOGGED_IN),
    ("POST", f"{_B}/ledger/entries"): Case(
        TREASURERS,
        body=lambda _: {"member_id": "ada", "kind": "topup", "amount": "1.00", "reason": "r"},
    ),
    ("GET", f"{_B}/ledger/verify"): Case(TREASURERS),
    ("POST", f"{_B}/credits/sweep"): Case(TREASURERS),
    ("GET", f"{_B}/balance"): Case(LOGGED_IN),
    ("GET", f"{_B}/balances"): Case(TREASURERS),
    ("PUT", f"{_B}/categories/{{category_id}}/prepaid"): Case(
        TREASURERS, path=f"{_B}/categories/member/prepaid",
        body=lambda _: {"prepaid": True, "threshold": "5.00", "overdraft": "2.00"},
    ),
    ("GET", f"{_B}/prepaid"): Case(LOGGED_IN),
    ("GET", f"{_B}/prepaid/overdrafts"): Case(TREASURERS),
}

TABLE: dict[tuple[str, str], Case] = {
    ("POST", "/api/auth/login"): Case(
        EVERYONE, body=lambda _: {"email": "ada@example.org", "password": password_of("ada")}
    ),
    ("POST", "/api/auth/logout"): Case(EVERYONE),
    ("GET", "/api/me"): Case(LOGGED_IN),
    ("PATCH", "/api/me"): Case(LOGGED_IN, body=lambda _: {"name": "New Name"}),
    ("POST", "/api/me/password"): Case(
        LOGGED_IN,
        body=lambda who: {"current_password": password_of(who), "new_password": "another-pass-1"},
    ),
    ("GET", "/api/me/tokens"): Case(LOGGED_IN),
    ("POST", "/api/me/tokens"): Case(LOGGED_IN, body=lambda _: {"name": "ci"}),
    ("DELETE", "/api/me/tokens/{token_id}"): Case(LOGGED_IN, path="/api/me/tokens/99999"),
    ("GET", "/api/members"): Case(MANAGERS),
    ("POST", "/api/members"): Case(MANAGERS, body=lambda _: {"name": "Newbie"}),
    ("GET", "/api/members/{member_id}"): Case(MANAGERS, path="/api/members/ada"),
    ("PATCH", "/api/members/{member_id}"): Case(
        MANAGERS, path="/api/members/ada", body=lambda _: {"category": "student"}
    ),
    ("PUT", "/api/members/{member_id}/roles"): Case(
        {ADMIN}, path="/api/members/ada/roles", body=lambda _: {"roles": ["treasurer"]}
    ),
    ("GET", "/api/members/{member_id}/badges"): Case(MANAGERS, path="/api/members/ada/badges"),
    ("POST", "/api/members/{member_id}/badges"): Case(
        MANAGERS, path="/api/members/ada/badges", body=lambda who: {"uid": f"0A0B{len(who):04X}"}
    ),
    ("PATCH", "/api/badges/{badge_id}"): Case(
        MANAGERS, path="/api/badges/1", body=lambda _: {"status": "lost"}
    ),
    ("GET", "/api/categories"): Case(LOGGED_IN),
    ("POST", "/api/categories"): Case(
        {TREASURER, MANAGER, ADMIN}, body=lambda who: {"id": f"cat-{who}", "name": "Cat"}
    ),
    ("GET", "/api/machines"): Case(EVERYONE),
    ("GET", "/api/machines/{machine_id}"): Case(EVERYONE, path="/api/machines/laser"),
    ("POST", "/api/machines"): Case(MANAGERS, body=lambda who: {"id": f"cnc-{who}", "name": "CNC"}),
    ("PATCH", "/api/machines/{machine_id}"): Case(
        MANAGERS, path="/api/machines/laser", body=lambda _: {"idle_timeout_s": 600}
    ),
    ("POST", "/api/machines/{machine_id}/out-of-service"): Case(
        MANAGERS, path="/api/machines/laser/out-of-service", body=lambda _: {"reason": "mirror"}
    ),
    ("POST", "/api/machines/{machine_id}/back-in-service"): Case(
        MANAGERS, path="/api/machines/laser/back-in-service"
    ),
    ("GET", "/api/machines/{machine_id}/commands"): Case(
        MANAGERS, path="/api/machines/laser/commands"
    ),
    ("POST", "/api/machines/{machine_id}/lock"): Case(
        MANAGERS, path="/api/machines/laser/lock", body=lambda _: {"reason": "closing time"}
    ),
    ("POST", "/api/machines/{machine_id}/controller/credentials"): Case(
        MANAGERS, path="/api/machines/laser/controller/credentials"
    ),
    ("POST", "/api/machines/{machine_id}/enroll"): Case(
        MANAGERS, path="/api/machines/laser/enroll", body=lambda _: {"member_id": "nora"}
    ),
    ("GET", "/api/machines/{machine_id}/enroll/{enrollment_id}"): Case(
        MANAGERS, path="/api/machines/laser/enroll/1"
    ),
    ("GET", "/api/training-types"): Case(LOGGED_IN),
    ("POST", "/api/training-types"): Case(
        MANAGERS, body=lambda who: {"id": f"t-{who}", "name": "T", "machine_ids": ["laser"]}
    ),
    ("PATCH", "/api/training-types/{training_type_id}"): Case(
        MANAGERS, path="/api/training-types/laser", body=lambda _: {"lapse_months": 6}
    ),
    ("GET", "/api/trainings"): Case(LOGGED_IN),
    ("POST", "/api/trainings"): Case(
        TRAINERS,
        body=lambda _: {"member_id": "nora", "training_type_id": "laser", "level": "autonomous"},
    ),
    ("POST", "/api/trainings/revoke"): Case(
        TRAINERS, body=lambda _: {"member_id": "ada", "training_type_id": "laser"}
    ),
    ("GET", "/api/trainings/lapsing"): Case(TRAINERS),
    ("GET", "/api/sessions"): Case(EVERYONE),
    ("GET", "/api/sessions/{session_id}"): Case(EVERYONE, path="/api/sessions/none"),
    ("GET", "/api/denials"): Case(MANAGERS),
    ("GET", "/api/ingest/stats"): Case(MANAGERS),
    ("GET", "/api/ingest/conflicts"): Case(MANAGERS),
    ("GET", "/api/faults"): Case(MANAGERS),
    ("GET", "/api/health"): Case(EVERYONE),
    ("GET", "/api/audit"): Case(MANAGERS),
    ("GET", "/api/audit/export"): Case(MANAGERS, params={"format": "csv"}),
    ("GET", "/api/me/export"): Case(LOGGED_IN),
    ("GET", "/api/members/{member_id}/export"): Case(MANAGERS, path="/api/members/ada/export"),
    ("POST", "/api/members/{member_id}/erase"): Case(MANAGERS, path="/api/members/ada/erase"),
    ("POST", "/api/members/import"): Case(
        MANAGERS, content=lambda who: f"name,email\nNew {who},new-{who}@example.org\n".encode()
    ),
    ("GET", "/"): Case(EVERYONE),
    **{key: case for key, case in BILLING.items()},
}


def _routes(app: Any) -> set[tuple[str, str]]:
    """Every route: the OpenAPI document's (FastAPI may keep included routers' routes
    out of `app.routes`), plus the routes left out of the schema (pages)."""
    documented = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    direct = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    return documented | direct


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def test_api_access_table_names_every_route(client: TestClient) -> None:
    missing = _routes(client.app) - set(TABLE)
    assert not missing, f"routes without an access rule in TABLE: {sorted(missing)}"


@pytest.mark.parametrize("route", sorted(TABLE), ids=lambda r: f"{r[0]} {r[1]}")
def test_api_access_route_lets_through_only_its_roles(
    route: tuple[str, str], client: TestClient, auth: Headers
) -> None:
    method, template = route
    case = TABLE[route]
    for who in sorted(EVERYONE):
        headers = {} if who == ANON else auth(who)
        body = (case.body or _none)(who)
        raw = case.content(who) if case.content else None
        if raw is not None:
            headers = {**headers, "Content-Type": "text/csv"}
        response = client.request(
            method,
            case.path or template,
            json=body if raw is None else None,
            content=raw,
            params=case.params,
            headers=headers,
        )
        assert response.status_code < 500, (who, response.text)
        refused = response.status_code in (401, 403, 404)
        if who in case.allowed:
            assert response.status_code not in (401, 403), (
                who,
                response.status_code,
                response.text,
            )
        else:
            assert refused, (who, response.status_code, response.text)
            assert "detail" in response.json()
