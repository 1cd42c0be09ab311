"""Regression tests of the API defects found attacking the server (issue 10, items 1-10)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from protocol import Level
from server.adapters.orm import ApiToken, AuditEntry, utcnow
from server.adapters.repository import MemberRepository
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import commands as cmds
from tests.fixtures import free_port
from tests.server.conftest import Headers, password_of

ADA = {"email": "ada@example.org", "password": password_of("ada")}
ROOT = Principal("root", frozenset({Role.ADMIN}))


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(lab), raise_server_exceptions=False) as client:
        yield client


def _login(app: Any, credentials: dict[str, str]) -> tuple[TestClient, dict[str, str]]:
    """A browser of its own, logged in: the client and its CSRF header."""
    browser = TestClient(app, raise_server_exceptions=False)
    csrf = browser.post("/api/auth/login", json=credentials).json()["csrf_token"]
    return browser, {"X-CSRF-Token": csrf}


# -- 1. a trainer whose trainer training ended has no trainer powers ------------------------


def _regrant_tom_trainer(lab: ServerRuntime, *, days_ago: int, **kwargs: Any) -> None:
    lab.bus.handle(
        cmds.GrantTraining(
            "tom", "laser", Level.TRAINER, at=utcnow() - timedelta(days=days_ago), **kwargs
        )
    )


def test_security_trainer_with_expired_trainer_training_cannot_grant(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    _regrant_tom_trainer(lab, days_ago=10, expires_at=utcnow() - timedelta(days=1))
    grant = {"member_id": "nora", "training_type_id": "laser", "level": "autonomous"}
    response = client.post("/api/trainings", json=grant, headers=auth("tom"))
    assert response.status_code == 403
    assert client.get("/api/me", headers=auth("tom")).json()["trainer_of"] == []


def test_security_trainer_with_lapsed_trainer_training_cannot_list_names(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    lab.bus.handle(cmds.UpdateTrainingType("laser", lapse_months=1))
    _regrant_tom_trainer(lab, days_ago=90)
    response = client.get("/api/trainings?training_type=laser", headers=auth("tom"))
    assert response.status_code == 403
    grant = {"member_id": "nora", "training_type_id": "laser", "level": "supervised"}
    assert client.post("/api/trainings", json=grant, headers=auth("tom")).status_code == 403


# -- 2. a trainer cannot demote a peer trainer -----------------------------------------------


def test_security_trainer_cannot_demote_a_peer_trainer_by_granting_lower(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    lab.bus.handle(cmds.AddMember("Tina", member_id="tina"))
    lab.bus.handle(cmds.GrantTraining("tina", "laser", Level.TRAINER))
    demote = {"member_id": "tina", "training_type_id": "laser", "level": "autonomous"}
    response = client.post("/api/trainings", json=demote, headers=auth("tom"))
    assert response.status_code == 403
    assert "revoke" in response.json()["detail"]
    assert client.get("/api/me", headers=auth("tina")).json()["trainer_of"] == ["laser"]


# -- 3. role holders above you are out of reach; there is always an active admin -----------


def test_security_manager_cannot_deactivate_an_admin(client: TestClient, auth: Headers) -> None:
    response = client.patch("/api/members/root", json={"active": False}, headers=auth("mona"))
    assert response.status_code == 403
    assert client.get("/api/me", headers=auth("root")).status_code == 200


def test_security_manager_cannot_change_an_admins_email(client: TestClient, auth: Headers) -> None:
    body = {"email": "mona-owns-this@example.org"}
    response = client.patch("/api/members/root", json=body, headers=auth("mona"))
    assert response.status_code == 403
    assert client.get("/api/me", headers=auth("root")).json()["email"] is None


def test_security_last_admin_cannot_deactivate_themselves(
    client: TestClient, auth: Headers
) -> None:
    response = client.patch("/api/members/root", json={"active": False}, headers=auth("root"))
    assert response.status_code == 400
    assert "admin" in response.json()["detail"]
    assert client.get("/api/me", headers=auth("root")).status_code == 200


def test_security_last_admin_cannot_be_erased_by_the_system(lab: ServerRuntime) -> None:
    with pytest.raises(Exception, match="admin"):
        lab.bus.handle(cmds.EraseMember("root"))
    with lab.new_uow() as uow:
        assert uow.members.with_roles({"admin"}) == {"root"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_security_two_admins_removing_each_other_leave_one(
    lab: ServerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.bus.handle(cmds.AddMember("Ruth", member_id="ruth"))
    lab.bus.handle(cmds.SetRoles("ruth", frozenset({Role.ADMIN})))
    ruth = Principal("ruth", frozenset({Role.ADMIN}))
    # Both changes are made before either commits, unless the rule serialises them.
    barrier = threading.Barrier(2)
    from server.service_layer import members

    original = members.record

    def record_then_meet(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1.5)

    monkeypatch.setattr(members, "record", record_then_meet)
    results: list[str] = []

    def demote(member_id: str, actor: Principal) -> None:
        try:
            lab.bus.handle(cmds.SetRoles(member_id, frozenset(), actor=actor))
            results.append("done")
        except Exception as exc:  # the refused one
            results.append(type(exc).__name__)

    threads = [
        threading.Thread(target=demote, args=("ruth", ROOT)),
        threading.Thread(target=demote, args=("root", ruth)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with lab.new_uow() as uow:
        assert len(uow.members.with_roles({"admin"})) == 1
    assert sorted(results) == ["DomainError", "done"]


# -- 4. a password change ends the other logins and every token; attempts are limited ------


def test_security_password_change_ends_other_logins_and_tokens(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    token = auth("ada")
    other, _ = _login(client.app, ADA)
    mine, csrf = _login(client.app, ADA)
    body = {"current_password": password_of("ada"), "new_password": "a-brand-new-password"}
    assert mine.post("/api/me/password", json=body, headers=csrf).status_code == 204
    assert mine.get("/api/me").status_code == 200
    assert other.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=token).status_code == 401


def test_security_password_change_current_password_checks_are_limited(
    client: TestClient, auth: Headers
) -> None:
    headers = auth("ada")
    wrong = {"current_password": "guess-guess-guess", "new_password": "a-brand-new-password"}
    for _ in range(5):
        assert client.post("/api/me/password", json=wrong, headers=headers).status_code == 401
    right = {**wrong, "current_password": password_of("ada")}
    response = client.post("/api/me/password", json=right, headers=headers)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


# -- 5. every request body is bounded; validation errors echo no secret ----------------------


def test_security_large_json_body_is_refused_with_413(client: TestClient) -> None:
    body = b'{"email": "ada@example.org", "password": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = client.post(
        "/api/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert len(response.content) < 1000


def test_security_chunked_body_is_cut_off_early(lab: ServerRuntime) -> None:
    app = create_app(lab)
    chunk = b"x" * 65536
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": read < 320}  # 20 MB

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/auth/login", "raw_path": b"/api/auth/login",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert read <= 20


def test_security_validation_error_does_not_echo_the_password(client: TestClient) -> None:
    secret = "my-secret\x01password"
    response = client.post("/api/auth/login", json={"email": "ada@example.org", "password": secret})
    assert response.status_code == 422
    assert "my-secret" not in response.text


def test_security_validation_error_truncates_huge_inputs(client: TestClient, auth: Headers) -> None:
    body = {"name": "n" * 100_000}
    response = client.post("/api/me/tokens", json=body, headers=auth("ada"))
    assert response.status_code == 422
    assert len(response.content) < 2000


# -- 6. no 500: surrogates, extreme dates, concurrent creates --------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/me/tokens", '{"name": "laptop \\ud800"}'),
        ("/api/auth/login", '{"email": "ada@example.org", "password": "\\ud800\\ud800\\ud800"}'),
        ("/api/me/tokens", '{"name": "laptop", "\\udfff": 1}'),
    ],
)
def test_security_lone_surrogate_in_json_is_a_4xx(
    client: TestClient, auth: Headers, path: str, body: str
) -> None:
    headers = {**auth("ada"), "Content-Type": "application/json"}
    response = client.post(path, content=body.encode(), headers=headers)
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_security_grant_expiry_at_the_edge_of_time_is_a_4xx(
    client: TestClient, auth: Headers, expires_at: str
) -> None:
    grant = {
        "member_id": "nora", "training_type_id": "laser", "level": "autonomous",
        "expires_at": expires_at,
    }  # fmt: skip
    response = client.post("/api/trainings", json=grant, headers=auth("mona"))
    assert response.status_code in (400, 422)


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B01:00",
        "until=9999-12-31T23:59:59-01:00",
        "since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
    ],
)
@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/export"])
def test_security_audit_dates_at_the_edge_of_time_are_a_4xx(
    client: TestClient, auth: Headers, path: str, query: str
) -> None:
    response = client.get(f"{path}?{query}", headers=auth("mona"))
    assert response.status_code == 400
    assert "between" in response.text


def _meet_after_email_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests look the email up before either inserts: the race the unique index ends."""
    barrier = threading.Barrier(2)
    original = MemberRepository.by_email

    def by_email(self: MemberRepository, email: str) -> Any:
        found = original(self, email)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1.5)
        return found

    monkeypatch.setattr(MemberRepository, "by_email", by_email)


def _twice(call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: call(), range(2)))


def test_security_concurrent_creates_with_one_email_answer_409(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = auth("mona")
    _meet_after_email_lookup(monkeypatch)
    body = {"name": "Twin", "email": "twin@example.org"}
    responses = _twice(lambda: client.post("/api/members", json=body, headers=headers))
    assert sorted(r.status_code for r in responses) == [201, 409]


def test_security_concurrent_imports_with_one_email_report_the_line(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {**auth("mona"), "Content-Type": "text/csv"}
    _meet_after_email_lookup(monkeypatch)
    csv = "name,email\nTwin,twin@example.org\n"
    responses = _twice(lambda: client.post("/api/members/import", content=csv, headers=headers))
    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(r.json()["imported"] for r in responses) == [0, 1]


# -- 7. forwarded headers only from trusted proxies; the limiter's memory is bounded -------


def test_security_login_limiter_memory_is_bounded() -> None:
    from server.api.ratelimit import LoginRateLimiter

    limiter = LoginRateLimiter(max_keys=100)
    for n in range(1000):
        limiter.failed(f"ip:10.0.{n // 256}.{n % 256}")
    assert len(limiter) <= 100


def _serve_and_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker_url: str, trusted: str | None
) -> dict[str, Any]:
    """Run `fablab serve` up to uvicorn, then send 6 failed logins through what uvicorn would
    serve, from 127.0.0.1, each claiming another client in X-Forwarded-For."""
    import uvicorn

    from server import cli

    monkeypatch.setenv("FABLAB_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("FABLAB_MQTT_URL", broker_url)
    # `fablab serve` binds its port before starting: never the default 8000 in a test.
    monkeypatch.setenv("FABLAB_HTTP_PORT", str(free_port()))
    if trusted is not None:
        monkeypatch.setenv("FABLAB_TRUSTED_PROXIES", trusted)
    seen: dict[str, Any] = {}

    def fake_run(server: uvicorn.Server, sockets: Any = None) -> None:
        config = server.config
        config.load()
        seen["server_header"] = config.server_header

        async def probe() -> list[int]:
            transport = httpx.ASGITransport(config.loaded_app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                codes = []
                for n in range(6):
                    response = await http.post(
                        "/api/auth/login",
                        json={"email": f"who{n}@example.org", "password": "wrong-password"},
                        headers={"X-Forwarded-For": f"203.0.113.{n}"},
                    )
                    codes.append(response.status_code)
                return codes

        seen["codes"] = asyncio.run(probe())

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    cli.serve(verbose=False)
    return seen


def test_security_forwarded_for_from_an_untrusted_peer_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mosquitto: Any
) -> None:
    seen = _serve_and_probe(monkeypatch, tmp_path, mosquitto.url, trusted=None)
    assert seen["codes"] == [401] * 5 + [429]
    assert seen["server_header"] is False


def test_security_forwarded_for_from_a_trusted_proxy_names_the_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mosquitto: Any
) -> None:
    seen = _serve_and_probe(monkeypatch, tmp_path, mosquitto.url, trusted='["127.0.0.1"]')
    assert seen["codes"] == [401] * 6


# -- 8. security headers --------------------------------------------------------------------


def test_security_pages_carry_csp_and_framing_headers(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/api/me", "/api/me/export", "/api/audit/export"])
def test_security_personal_data_is_not_cached(client: TestClient, auth: Headers, path: str) -> None:
    response = client.get(path, headers=auth("root"))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_security_pages_have_no_inline_script_or_style() -> None:
    """The CSP allows no inline code: every page must load its scripts from /static."""
    from dashboards import TEMPLATES_DIR

    for template in Path(TEMPLATES_DIR).rglob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and "<script type" not in text, template
        assert " style=" not in text and "<style" not in text, template
        assert " onclick=" not in text and " onload=" not in text, template


# -- 9. erasure removes what the member typed; the audit log holds no personal data --------


def test_security_erasure_removes_api_token_names_everywhere(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    headers = auth("ada")
    name = "Ada's laptop at 12 Rue X"
    assert client.post("/api/me/tokens", json={"name": name}, headers=headers).status_code == 201
    assert client.post("/api/members/ada/erase", headers=auth("mona")).status_code == 200
    with lab.new_uow() as uow:
        names = uow.session.scalars(select(ApiToken.name)).all()
        logged = uow.session.execute(select(AuditEntry.before, AuditEntry.after)).all()
    assert not any("laptop" in n for n in names)
    assert not any("laptop" in json.dumps(list(row)) for row in logged)


# -- 10. PATCH /api/me does not tell whose email exists ---------------------------------------


def test_security_own_email_change_does_not_reveal_other_accounts(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    lab.bus.handle(cmds.UpdateMember("mona", email="mona@example.org"))
    response = client.patch("/api/me", json={"email": "mona@example.org"}, headers=auth("ada"))
    assert 400 <= response.status_code < 500
    assert "mona" not in response.text and "exists" not in response.text
    assert client.get("/api/me", headers=auth("ada")).json()["email"] == "ada@example.org"


def test_security_own_email_changes_are_rate_limited(client: TestClient, auth: Headers) -> None:
    headers = auth("ada")
    codes = [
        client.patch("/api/me", json={"email": f"probe{n}@example.org"}, headers=headers)
        for n in range(6)
    ]
    assert [c.status_code for c in codes] == [200] * 5 + [429]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_security_migration_removes_token_names_from_the_audit_log(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Entries written before the fix lose the name (revision 0008_security)."""
    from sqlalchemy import create_engine, text

    from server.adapters.migrations import upgrade

    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    else:
        database_url = request.getfixturevalue("fresh_postgres_url")
    upgrade(database_url, "0004")
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_entry (at, action, object_type, object_id, after) "
                    "VALUES (:at, 'api_token.create', 'api_token', '1', :after)"
                ),
                {"at": utcnow().replace(tzinfo=None), "after": '{"member_id": "a", "name": "x"}'},
            )
        upgrade(database_url, "0008_security")
        with engine.connect() as connection:
            after = connection.execute(text("SELECT after FROM audit_entry")).scalar_one()
        assert json.loads(after) == {"member_id": "a"}
    finally:
        engine.dispose()


def test_security_manager_cannot_add_a_badge_to_an_admins_account(
    client: TestClient, auth: Headers
) -> None:
    """An admin's badge is staff on every machine: a manager must not give themselves one."""
    response = client.post(
        "/api/members/root/badges", json={"uid": "04DEAD01"}, headers=auth("mona")
    )
    assert response.status_code == 403
    assert client.get("/api/members/root/badges", headers=auth("root")).json() == []
