"""Importing members and badges from CSV, with a per-line report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.adapters.orm import AuditEntry, Badge, Member
from server.api.main import create_app
from server.api.routes import imports as import_routes
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.domain.errors import PermissionDeniedError
from server.service_layer.imports import MAX_BYTES, ImportFormatError, import_members, parse_csv
from tests.server.conftest import Headers
from tests.server.test_audit_api import mount

CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(mount(create_app(lab), import_routes.router)) as client:
        yield client


def _post(client: TestClient, headers: dict[str, str], body: str | bytes, **params: str) -> dict:
    response = client.post(
        "/api/members/import",
        content=body.encode() if isinstance(body, str) else body,
        params=params,
        headers={**CSV, **headers},
    )
    assert response.status_code == 200, response.text
    report: dict = response.json()
    return report


def _members(lab: ServerRuntime) -> int:
    with lab.new_uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(Member)) or 0


def test_imports_valid_lines_imported_bad_ones_reported(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    body = (
        "name,email,category,badge_uid\n"
        "Grace Hopper,Grace@Example.org,student,04:aa:bb:cc\n"
        "Alan Turing,,,\n"
        "Bad Email,not-an-email,,\n"
    )
    before = _members(lab)
    report = _post(client, auth("mona"), body)
    assert report["imported"] == 2
    assert report["errors"] == [{"line": 4, "error": "not an email address: 'not-an-email'"}]
    assert [(r["line"], r["status"], r["name"]) for r in report["lines"]] == [
        (2, "imported", "Grace Hopper"),
        (3, "imported", "Alan Turing"),
        (4, "error", "Bad Email"),
    ]
    assert _members(lab) == before + 2
    grace_id = report["lines"][0]["member_id"]
    with lab.new_uow() as uow:
        grace = uow.members.get(grace_id)
        assert grace is not None
        assert (grace.name, grace.email, grace.category) == (
            "Grace Hopper",
            "grace@example.org",
            "student",
        )
        [badge] = uow.badges.of_member(grace_id)
        assert (badge.id, badge.uid, badge.status) == (
            report["lines"][0]["badge_id"],
            "04AABBCC",
            "active",
        )
        alan = uow.members.get(report["lines"][1]["member_id"])
        assert alan is not None and alan.email is None and alan.category == "member"
        # Audited as the manager's own changes.
        actors = uow.session.scalars(
            select(AuditEntry.actor_id).where(AuditEntry.object_id.in_([grace_id, str(badge.id)]))
        ).all()
        assert set(actors) == {"mona"}


def test_imports_every_kind_of_bad_line_is_reported_with_its_line(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    body = (
        "name,email,badge_uid\n"
        "\n"  # blank lines are skipped but counted
        "One,one@example.org,\n"
        "Dup Email,ONE@example.org,\n"
        "Taken Email,ada@example.org,\n"
        "Taken Badge,,04A1B2C3\n"
        "Bad Badge,,zz-not-hex\n"
        ",nobody@example.org,\n"
        "Too,many,04010203,values\n"
        "Two,,0A0B0C0D\n"
        "Dup Badge,,0a:0b:0c:0d\n"
        '"Quoted, Name",quoted@example.org,\n'
    )
    report = _post(client, auth("mona"), body)
    by_line = {r["line"]: r for r in report["lines"]}
    assert {line: r["status"] for line, r in by_line.items()} == {
        3: "imported",
        4: "error",
        5: "error",
        6: "error",
        7: "error",
        8: "error",
        9: "error",
        10: "imported",
        11: "error",
        12: "imported",
    }
    errors = {e["line"]: e["error"] for e in report["errors"]}
    assert errors[4] == "email one@example.org is already on line 3"
    assert errors[5] == "a member with email ada@example.org already exists"
    assert errors[6] == "badge 04A1B2C3 is already registered"
    assert "hexadecimal" in errors[7]
    assert errors[8] == "name is empty"
    assert "4 values but the header has 3 columns" in errors[9]
    assert errors[11] == "badge 0A0B0C0D is already on line 10"
    assert report["imported"] == 3
    assert by_line[12]["name"] == "Quoted, Name"


def test_imports_unknown_category_is_a_line_error(client: TestClient, auth: Headers) -> None:
    report = _post(client, auth("mona"), "name,category\nZed,martians\n")
    assert report["errors"] == [{"line": 2, "error": "unknown member category 'martians'"}]


def test_imports_dry_run_checks_and_imports_nothing(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    before = _members(lab)
    body = (
        "name,email\n"
        "Grace,grace@example.org\n"
        "Ada again,ada@example.org\n"
        "Grace 2,grace@example.org\n"
    )
    report = _post(client, auth("mona"), body, dry_run="true")
    assert report["dry_run"] is True
    assert (report["imported"], report["valid"]) == (0, 1)
    assert [r["status"] for r in report["lines"]] == ["valid", "error", "error"]
    assert all(r["member_id"] is None for r in report["lines"])
    assert _members(lab) == before


def test_imports_semicolons_bom_crlf_and_any_column_order(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    body = "\ufeffBadge_UID; Name ;EMAIL\r\n04 11 22 33;Élodie Dupré;elodie@example.fr\r\n"
    report = _post(client, auth("mona"), body.encode("utf-8"))
    assert report["errors"] == []
    [line] = report["lines"]
    with lab.new_uow() as uow:
        member = uow.members.get(line["member_id"])
        assert member is not None and member.name == "Élodie Dupré"
        badge = uow.session.scalars(select(Badge).where(Badge.uid == "04112233")).one()
        assert badge.member_id == member.id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Nom,Courriel\nÉlodie,e@example.fr\n".encode("latin-1"), "not UTF-8"),
        (b"Ada Lovelace,ada2@example.org\n", "missing header"),
        (b"email,badge_uid\nx@example.org,\n", "missing header"),
        (b"name,email,phone\nAda,a@example.org,555\n", "unknown column(s) 'phone'"),
        (b"name,name\nA,B\n", "named twice"),
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"name\n\x00\n", "NUL"),
        (b'name\n"unterminated\n', "not valid CSV"),
    ],
)
def test_imports_unreadable_file_is_400_with_a_message_and_imports_nothing(
    lab: ServerRuntime, client: TestClient, auth: Headers, body: bytes, message: str
) -> None:
    before = _members(lab)
    response = client.post("/api/members/import", content=body, headers={**CSV, **auth("mona")})
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert _members(lab) == before


def test_imports_size_type_and_role_are_checked(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    mona = auth("mona")
    big = b"name\n" + b"x" * MAX_BYTES
    response = client.post("/api/members/import", content=big, headers={**CSV, **mona})
    assert response.status_code == 413
    assert "2 MB" in response.json()["detail"]

    response = client.post(
        "/api/members/import",
        json={"name": "Ada"},
        headers=mona,
    )
    assert response.status_code == 415
    assert "text/csv" in response.json()["detail"]

    for member_id in ("ada", "tom", "tess"):
        response = client.post(
            "/api/members/import", content=b"name\nEve\n", headers={**CSV, **auth(member_id)}
        )
        assert response.status_code == 403, member_id
    assert (
        client.post("/api/members/import", content=b"name\nEve\n", headers=CSV).status_code == 401
    )
    assert (
        client.post(
            "/api/members/import",
            params={"dry_run": "maybe"},
            content=b"name\nEve\n",
            headers={**CSV, **mona},
        ).status_code
        == 422
    )


def test_imports_service_checks_the_actor_and_row_limit(lab: ServerRuntime) -> None:
    with pytest.raises(PermissionDeniedError):
        import_members(lab.bus, b"name\nEve\n", Principal("nora"))
    report = import_members(lab.bus, b"name\nEve\n", Principal("mona", frozenset({Role.MANAGER})))
    assert report.imported == 1
    with pytest.raises(ImportFormatError, match="more than"):
        parse_csv(b"name\n" + b"x\n" * 10_001)
