"""The audit log: every change recorded with actor and before/after, queryable, exportable,
append-only in the database itself."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from protocol import Level
from server.adapters.orm import AuditEntry
from server.api.main import create_app
from server.api.routes import audit
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import commands as cmds
from tests.server.conftest import Headers

MONA = Principal("mona", frozenset({Role.MANAGER}))
ROOT = Principal("root", frozenset({Role.ADMIN}))


def mount(app: FastAPI, router: APIRouter) -> FastAPI:
    """Include the router unless the app already does (once main.py mounts it)."""
    included = any(getattr(r, "original_router", None) is router for r in app.router.routes)
    served = {getattr(r, "path", None) for r in app.router.routes}
    if not included and not any(getattr(r, "path", None) in served for r in router.routes):
        app.include_router(router)
    return app


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(mount(create_app(lab), audit.router)) as client:
        yield client


def _entries(client: TestClient, headers: dict[str, str], **params: str) -> list[dict]:
    response = client.get("/api/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]
    return items


def _ada_badge_id(lab: ServerRuntime) -> int:
    with lab.new_uow() as uow:
        [badge] = uow.badges.of_member("ada")
        return badge.id


def test_audit_grant_and_revoke_recorded_with_actor_and_before_after(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    training_id = lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED, actor=MONA))
    lab.bus.handle(cmds.RevokeTraining("nora", "laser", actor=MONA))
    mona = auth("mona")

    [grant] = _entries(client, mona, action="training.grant", actor="mona")
    assert grant["object_type"] == "training"
    assert grant["object_id"] == str(training_id)
    assert grant["before"] is None
    assert grant["after"]["member_id"] == "nora"
    assert grant["after"]["level"] == "supervised"

    [revoke] = _entries(client, mona, action="training.revoke")
    assert revoke["actor_id"] == "mona"
    assert revoke["object_id"] == str(training_id)
    assert revoke["before"]["level"] == "supervised"
    assert revoke["after"] is None


def test_audit_badge_status_change_recorded(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    badge_id = _ada_badge_id(lab)
    lab.bus.handle(cmds.SetBadgeStatus(badge_id, "lost", actor=MONA))
    [entry] = _entries(client, auth("mona"), action="badge.status")
    assert entry["actor_id"] == "mona"
    assert (entry["object_type"], entry["object_id"]) == ("badge", str(badge_id))
    assert entry["before"] == {"status": "active"}
    assert entry["after"] == {"status": "lost"}


def test_audit_out_of_service_and_back_recorded(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    lab.bus.handle(cmds.SetOutOfService("laser", True, "mirror cracked", actor=MONA))
    lab.bus.handle(cmds.SetOutOfService("laser", False, actor=MONA))
    mona = auth("mona")
    [down] = _entries(client, mona, action="machine.out_of_service")
    assert down["actor_id"] == "mona"
    assert down["before"]["out_of_service"] is False
    assert down["after"]["out_of_service"] is True
    assert down["after"]["out_of_service_reason"] == "mirror cracked"
    [up] = _entries(client, mona, action="machine.back_in_service")
    assert up["before"]["out_of_service"] is True
    assert up["after"]["out_of_service"] is False


def test_audit_role_change_recorded(lab: ServerRuntime, client: TestClient, auth: Headers) -> None:
    lab.bus.handle(cmds.SetRoles("nora", frozenset({Role.MANAGER}), actor=ROOT))
    [entry] = _entries(client, auth("root"), action="member.roles", object_id="nora")
    assert entry["actor_id"] == "root"
    assert entry["object_type"] == "member"
    assert entry["before"]["roles"] == []
    assert entry["after"]["roles"] == ["manager"]


def test_audit_filters_and_pagination(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    mona = auth("mona")
    for i in range(5):
        lab.bus.handle(cmds.AddCategory(f"cat-{i}", f"Category {i}", actor=MONA))
    page = client.get(
        "/api/audit",
        params={"action": "category.create", "limit": 2, "offset": 1},
        headers=mona,
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    # Newest first.
    assert [e["object_id"] for e in page["items"]] == ["cat-3", "cat-2"]

    assert _entries(client, mona, object_type="category", object_id="cat-0")[0]["after"] == {
        "name": "Category 0"
    }
    assert _entries(client, mona, actor="nobody") == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert _entries(client, mona, since=future) == []
    everything = client.get("/api/audit", params={"until": future}, headers=mona).json()
    assert everything["total"] == client.get("/api/audit", headers=mona).json()["total"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "501"},
        {"limit": "0"},
        {"offset": "-1"},
        {"since": "2026-01-01T00:00:00"},  # no time zone
        {"until": "yesterday"},
        {"until": "0.5"},  # pydantic alone would read a Unix time
        {"actor": "mo\x00na"},
        {"object_id": "x" * 101},
    ],
)
def test_audit_bad_query_is_422_json(
    client: TestClient, auth: Headers, params: dict[str, str]
) -> None:
    response = client.get("/api/audit", params=params, headers=auth("mona"))
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/export"])
def test_audit_is_for_managers_and_admins(client: TestClient, auth: Headers, path: str) -> None:
    assert client.get(path).status_code == 401
    for member_id in ("ada", "tom", "tess"):
        response = client.get(path, headers=auth(member_id))
        assert response.status_code == 403, member_id
        assert "manager" in response.json()["detail"]
    for member_id in ("mona", "root"):
        assert client.get(path, headers=auth(member_id)).status_code == 200, member_id


def test_audit_export_csv_has_header_and_every_matching_row(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    lab.bus.handle(cmds.SetOutOfService("laser", True, 'mirror, "cracked"\nsee log', actor=MONA))
    mona = auth("mona")
    response = client.get("/api/audit/export", params={"format": "csv"}, headers=mona)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="audit.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == list(audit.CSV_COLUMNS)
    total = client.get("/api/audit", headers=mona).json()["total"]
    assert len(rows) == total
    ids = [int(r["id"]) for r in rows]
    assert ids == sorted(ids)  # oldest first
    [oos] = [r for r in rows if r["action"] == "machine.out_of_service"]
    assert oos["actor_id"] == "mona"
    assert json.loads(oos["after"])["out_of_service_reason"] == 'mirror, "cracked"\nsee log'

    filtered = client.get(
        "/api/audit/export", params={"format": "csv", "action": "member.roles"}, headers=mona
    )
    assert {r["action"] for r in csv.DictReader(io.StringIO(filtered.text))} == {"member.roles"}


def test_audit_export_json_streams_more_than_one_batch(
    lab: ServerRuntime, client: TestClient, auth: Headers
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with lab.new_uow() as uow:
        uow.session.add_all(
            AuditEntry(
                at=at + timedelta(seconds=i),
                actor_id="bulk",
                action="test.bulk",
                object_type="thing",
                object_id=str(i),
                before=None,
                after=json.dumps({"i": i}),
            )
            for i in range(audit.EXPORT_BATCH * 2 + 7)
        )
        uow.commit()
    mona = auth("mona")
    response = client.get(
        "/api/audit/export", params={"format": "json", "actor": "bulk"}, headers=mona
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="audit.json"'
    entries = response.json()
    assert len(entries) == audit.EXPORT_BATCH * 2 + 7
    assert [e["after"]["i"] for e in entries] == list(range(len(entries)))

    window = client.get(
        "/api/audit/export",
        params={
            "format": "json",
            "since": (at + timedelta(seconds=10)).isoformat(),
            "until": (at + timedelta(seconds=20)).isoformat(),
        },
        headers=mona,
    ).json()
    assert [e["object_id"] for e in window] == [str(i) for i in range(10, 20)]


def test_audit_export_rejects_unknown_format(client: TestClient, auth: Headers) -> None:
    response = client.get("/api/audit/export", params={"format": "xlsx"}, headers=auth("mona"))
    assert response.status_code == 422


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entry SET action = 'forged'",
        "UPDATE audit_entry SET actor_id = NULL WHERE id = (SELECT min(id) FROM audit_entry)",
        "DELETE FROM audit_entry",
    ],
)
def test_audit_log_is_append_only_in_the_database(lab: ServerRuntime, statement: str) -> None:
    with lab.new_uow() as uow:
        before = uow.session.execute(text("SELECT id, action FROM audit_entry")).all()
    assert before
    with pytest.raises(DBAPIError, match="append-only"), lab.engine.begin() as connection:
        connection.execute(text(statement))
    with lab.new_uow() as uow:
        assert uow.session.execute(text("SELECT id, action FROM audit_entry")).all() == before
