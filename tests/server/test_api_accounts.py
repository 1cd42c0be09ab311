"""Logging in: cookie sessions with CSRF, rate limiting, tokens, own profile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from tests.server.conftest import Headers, password_of

ADA = {"email": "ada@example.org", "password": password_of("ada")}


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab)) as client:
        yield client


def test_accounts_login_sets_httponly_strict_cookie(client: TestClient) -> None:
    response = client.post("/api/auth/login", json=ADA)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/me").json()["id"] == "ada"


def test_accounts_cookie_write_without_csrf_header_is_403(client: TestClient) -> None:
    client.post("/api/auth/login", json=ADA)
    response = client.patch("/api/me", json={"name": "Countess"})
    assert response.status_code == 403
    assert "X-CSRF-Token" in response.json()["detail"]


def test_accounts_cookie_write_with_csrf_header_succeeds(client: TestClient) -> None:
    csrf = client.post("/api/auth/login", json=ADA).json()["csrf_token"]
    response = client.patch("/api/me", json={"name": "Countess"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.json()["name"] == "Countess"


def test_accounts_wrong_password_is_401_with_message(client: TestClient) -> None:
    response = client.post("/api/auth/login", json={**ADA, "password": "nope-nope-nope"})
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong email or password"}


def test_accounts_login_attempts_are_rate_limited(client: TestClient) -> None:
    for _ in range(5):
        client.post("/api/auth/login", json={**ADA, "password": "wrong-password"})
    response = client.post("/api/auth/login", json=ADA)  # even the right one, for now
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_accounts_logout_ends_the_session(client: TestClient) -> None:
    csrf = client.post("/api/auth/login", json=ADA).json()["csrf_token"]
    client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert client.get("/api/me").status_code == 401


def test_accounts_revoked_token_stops_working(client: TestClient, auth: Headers) -> None:
    headers = auth("ada")
    token_id = client.get("/api/me/tokens", headers=headers).json()[0]["id"]
    assert client.delete(f"/api/me/tokens/{token_id}", headers=headers).status_code == 204
    assert client.get("/api/me", headers=headers).status_code == 401


def test_accounts_maker_cannot_give_themselves_a_role(client: TestClient, auth: Headers) -> None:
    response = client.patch("/api/me", json={"roles": ["admin"]}, headers=auth("ada"))
    assert response.status_code == 422
    assert client.get("/api/me", headers=auth("ada")).json()["roles"] == []


def test_accounts_maker_cannot_change_own_category(client: TestClient, auth: Headers) -> None:
    response = client.patch("/api/me", json={"category": "partner"}, headers=auth("ada"))
    assert response.status_code == 422
    assert client.get("/api/me", headers=auth("ada")).json()["category"] == "member"


def test_accounts_password_change_needs_current_password(client: TestClient, auth: Headers) -> None:
    body = {"current_password": "not-my-password", "new_password": "a-new-password"}
    assert client.post("/api/me/password", json=body, headers=auth("ada")).status_code == 401
    good = {**body, "current_password": password_of("ada")}
    assert client.post("/api/me/password", json=good, headers=auth("ada")).status_code == 204
    login = client.post("/api/auth/login", json={**ADA, "password": "a-new-password"})
    assert login.status_code == 200


def test_accounts_deactivated_member_token_stops_working(client: TestClient, auth: Headers) -> None:
    ada = auth("ada")
    client.patch("/api/members/ada", json={"active": False}, headers=auth("mona"))
    assert client.get("/api/me", headers=ada).status_code == 401
