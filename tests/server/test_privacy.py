"""Personal data: a member's export, erasure by pseudonymisation, raw event retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from protocol import (
    EndReason,
    EventKind,
    Level,
    badge_digest,
    config_topic,
    events_topic,
    verify_config,
)
from server.adapters.orm import (
    ApiToken,
    AuditEntry,
    Badge,
    BadgeDenial,
    Base,
    Enrollment,
    LoginSession,
    RawEvent,
    Training,
    UsageSession,
)
from server.api.main import create_app
from server.api.routes import privacy
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.domain.errors import DomainError, NotFoundError, PermissionDeniedError
from server.domain.ingest_rules import Plausibility
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from server.service_layer.ingest import Outcome
from server.service_layer.privacy import RetentionWorker, pseudonym
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Headers, Ingest
from tests.server.test_audit_api import mount

ADA_UID = "04A1B2C3"
MONA = Principal("mona", frozenset({Role.MANAGER}))
ROOT = Principal("root", frozenset({Role.ADMIN}))
ADA_PASSWORD = "ada-secret-password"


@pytest.fixture
def client(lab: ServerRuntime) -> Iterator[TestClient]:
    with TestClient(mount(create_app(lab), privacy.router)) as client:
        yield client


@pytest.fixture
def ada_history(lab: ServerRuntime, ingest: Ingest, events: EventFactory) -> None:
    """Ada used the laser once, was refused once, logged in, and was being enrolled."""
    lab.bus.handle(cmds.SetPassword("ada", ADA_PASSWORD))
    lab.bus.handle(cmds.Login("ada@example.org", ADA_PASSWORD))
    lab.bus.handle(cmds.StartEnrollment("laser", "ada", actor=MONA))
    common = {"session_id": "s-ada", "member_id": "ada"}
    ingest(
        events(
            EventKind.SESSION_STARTED,
            **common,
            badge_uid=ADA_UID,
            level=Level.AUTONOMOUS.value,
            snapshot_version=1,
        )
    )
    events.wall += 600.0  # the session's real span
    ingest(
        events(
            EventKind.SESSION_ENDED,
            session_id="s-ada",
            reason=EndReason.BADGE.value,
            elapsed_seconds=600.0,
            busy_seconds=300.0,
        )
    )
    ingest(events(EventKind.BADGE_DENIED, badge_uid=ADA_UID, reason="out_of_service"))


def _count(lab: ServerRuntime, model: type[Base]) -> int:
    with lab.new_uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def _everything(lab: ServerRuntime) -> str:
    """Every value of every row of every table, as one text to search."""
    with lab.new_uow() as uow:
        parts = []
        for table in Base.metadata.sorted_tables:
            for row in uow.session.execute(select(table)).all():
                parts.append(repr(tuple(row)))
        return "\n".join(parts)


def _snapshot_has(sent: list[OutgoingMessage], uid: str, *, staff: bool = False) -> bool:
    key = bytes.fromhex(KEY_HEX)
    config = [m for m in sent if m.topic == config_topic(SITE, "laser")][-1]
    snapshot = verify_config(config.payload, key)
    find = snapshot.lookup_staff if staff else snapshot.lookup
    return find(badge_digest(key, uid)) is not None


# -- export ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("ada_history")
def test_privacy_export_holds_everything_about_me_and_no_secret(
    client: TestClient, auth: Headers
) -> None:
    headers = auth("ada")
    response = client.get("/api/me/export", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        'attachment; filename="fablab-data-ada.json"'
    )
    data = response.json()
    assert data["member"]["name"] == "Ada Lovelace"
    assert data["member"]["email"] == "ada@example.org"
    assert data["member"]["category"] == "member"
    assert data["member"]["has_password"] is True
    assert [b["uid"] for b in data["badges"]] == [ADA_UID]
    assert [(t["training_type_id"], t["level"]) for t in data["trainings"]] == [
        ("laser", "autonomous")
    ]
    [session] = data["sessions"]
    assert (session["id"], session["machine_id"], session["elapsed_seconds"]) == (
        "s-ada",
        "laser",
        600.0,
    )
    assert [(d["badge_uid"], d["reason"]) for d in data["denials"]] == [(ADA_UID, "out_of_service")]
    assert [e["machine_id"] for e in data["enrollments"]] == ["laser"]
    assert [t["name"] for t in data["api_tokens"]] == ["tests"]
    assert set(data["api_tokens"][0]) == {
        "id",
        "name",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    token = headers["Authorization"].removeprefix("Bearer ")
    assert token not in response.text
    assert "password_hash" not in response.text and "argon2" not in response.text
    actions = {e["action"] for e in data["audit"]}
    # About her (member, badge, training, token) and by her (her token, made by herself).
    assert {"member.create", "badge.create", "training.grant", "api_token.create"} <= actions
    assert all(isinstance(e["after"], dict | None) for e in data["audit"])


@pytest.mark.usefixtures("ada_history")
def test_privacy_export_holds_nothing_of_others(client: TestClient, auth: Headers) -> None:
    data = client.get("/api/me/export", headers=auth("nora")).json()
    assert data["member"]["id"] == "nora"
    assert data["sessions"] == [] and data["denials"] == [] and data["enrollments"] == []
    assert ADA_UID not in str(data)
    assert all(e["object_id"] != "ada" for e in data["audit"])


def test_privacy_export_needs_a_login(client: TestClient) -> None:
    response = client.get("/api/me/export")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_privacy_manager_exports_a_member_others_cannot(client: TestClient, auth: Headers) -> None:
    response = client.get("/api/members/ada/export", headers=auth("mona"))
    assert response.status_code == 200
    assert response.json()["member"]["id"] == "ada"
    assert client.get("/api/members/ada/export", headers=auth("nora")).status_code == 403
    assert client.get("/api/members/ghost/export", headers=auth("mona")).status_code == 404
    assert client.get("/api/members/a%00b/export", headers=auth("mona")).status_code == 422


# -- erasure --------------------------------------------------------------------------------


@pytest.mark.usefixtures("ada_history")
def test_privacy_erase_pseudonymises_and_keeps_accounting_records(
    lab: ServerRuntime, client: TestClient, auth: Headers, sent: list[OutgoingMessage]
) -> None:
    ada_token = auth("ada")
    lab.bus.handle(cmds.PublishConfigs(frozenset({"laser"})))
    assert _snapshot_has(sent, ADA_UID)
    sessions_before = _count(lab, UsageSession)
    trainings_before = _count(lab, Training)

    response = client.post("/api/members/ada/erase", headers=auth("mona"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["member_id"] == "ada"
    assert result["name"] == pseudonym("ada")
    assert result["badges_erased"] == 1
    assert result["machines_republished"] == ["laser"]

    # The badge has left the laser's signed snapshot.
    assert not _snapshot_has(sent, ADA_UID)

    with lab.new_uow() as uow:
        member = uow.members.get("ada")
        assert member is not None
        assert member.name.startswith("Erased member ")
        assert (member.email, member.password_hash, member.active) == (None, None, False)
        assert member.erased_at is not None
        assert member.roles == []
        [badge] = uow.session.scalars(select(Badge).where(Badge.member_id == "ada")).all()
        assert (badge.uid, badge.status) == (f"ERASED-{badge.id}", "erased")
        usage = uow.sessions.get("s-ada")
        assert usage is not None and usage.member_id == "ada" and usage.badge_uid is None
        assert usage.elapsed_seconds == 600.0
        [denial] = uow.session.scalars(select(BadgeDenial)).all()
        assert (denial.member_id, denial.badge_uid) == ("ada", f"ERASED-{badge.id}")
        assert all(e.badge_uid is None for e in uow.session.scalars(select(Enrollment)))
        trainings = uow.session.scalars(select(Training).where(Training.member_id == "ada"))
        assert all(t.revoked_at is not None and t.revoked_by == "mona" for t in trainings)
        logins = uow.session.scalars(select(LoginSession).where(LoginSession.member_id == "ada"))
        assert logins.all() == []
        tokens = uow.session.scalars(select(ApiToken).where(ApiToken.member_id == "ada"))
        assert all(t.revoked_at is not None for t in tokens)
        [entry] = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "member.erase")
        ).all()
        assert (entry.actor_id, entry.object_type, entry.object_id) == ("mona", "member", "ada")
    assert _count(lab, UsageSession) == sessions_before
    assert _count(lab, Training) == trainings_before

    # Nothing personal is left anywhere in the database.
    stored = _everything(lab)
    for personal in (ADA_UID, "Ada Lovelace", "ada@example.org"):
        assert personal not in stored, personal

    # Her token no longer works; she is gone from the API; a second erase finds no one.
    assert client.get("/api/me/export", headers=ada_token).status_code == 401
    assert client.get("/api/members/ada/export", headers=auth("mona")).status_code == 404
    again = client.post("/api/members/ada/erase", headers=auth("mona"))
    assert again.status_code == 404
    assert again.json()["detail"]


@pytest.mark.usefixtures("ada_history")
def test_privacy_erased_member_cannot_log_in_and_badge_can_be_reissued(
    lab: ServerRuntime,
) -> None:
    lab.bus.handle(cmds.EraseMember("ada", actor=MONA))
    with pytest.raises(DomainError):
        lab.bus.handle(cmds.Login("ada@example.org", ADA_PASSWORD))
    # The physical badge is free again: a new member may get it.
    newcomer = lab.bus.handle(cmds.AddMember("Newcomer"))
    lab.bus.handle(cmds.RegisterBadge(newcomer, ADA_UID))
    with pytest.raises(NotFoundError):
        lab.bus.handle(cmds.GrantTraining("ada", "laser", Level.AUTONOMOUS))


def test_privacy_erase_redacts_the_uid_in_stored_raw_events(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    ingest(events(EventKind.BADGE_DENIED, badge_uid=ADA_UID, reason="not_trained"))
    ingest(events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained"))
    lab.bus.handle(cmds.EraseMember("ada", actor=MONA))
    with lab.new_uow() as uow:
        payloads = [r.payload for r in uow.session.scalars(select(RawEvent).order_by(RawEvent.id))]
    assert ADA_UID not in "".join(payloads)
    assert '"ERASED-' in payloads[0]
    assert "04FFEE01" in payloads[1]  # nora's stays


def test_privacy_erase_rules(lab: ServerRuntime, client: TestClient, auth: Headers) -> None:
    # Makers, trainers and treasurers may not erase.
    for member_id in ("nora", "tom", "tess"):
        response = client.post("/api/members/ada/erase", headers=auth(member_id))
        assert response.status_code == 403, member_id
    # Nobody erases themselves.
    response = client.post("/api/members/mona/erase", headers=auth("mona"))
    assert response.status_code == 400
    assert "yourself" in response.json()["detail"]
    # A member with a lab-wide role needs an admin to erase.
    response = client.post("/api/members/tess/erase", headers=auth("mona"))
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    response = client.post("/api/members/tess/erase", headers=auth("root"))
    assert response.status_code == 200
    # Staff may be listed on every machine: all of them are republished.
    assert response.json()["machines_republished"] == ["laser"]
    # Unknown or malformed ids.
    assert client.post("/api/members/ghost/erase", headers=auth("mona")).status_code == 404
    assert client.post("/api/members/a%20b/erase", headers=auth("mona")).status_code == 422
    with pytest.raises(PermissionDeniedError):
        lab.bus.handle(cmds.EraseMember("ada", actor=Principal("nora")))


# -- retention ------------------------------------------------------------------------------


# Retention is about when events were received: any wall time is plausible here.
_ANY_WALL_TIME = Plausibility(max_ahead_s=float("inf"), max_behind_s=float("inf"))


def _feed(lab: ServerRuntime, event: object, at: datetime) -> Outcome:
    payload = event.encode()  # type: ignore[attr-defined]
    topic = events_topic(SITE, "laser")
    command = cmds.IngestEvent(topic, payload, received_at=at, limits=_ANY_WALL_TIME)
    result = lab.bus.handle(command)
    outcome: Outcome = result.outcome
    return outcome


def _denial(events: EventFactory) -> object:
    return events(EventKind.BADGE_DENIED, badge_uid="04FFEE01", reason="not_trained")


def test_privacy_purge_deletes_old_raw_events_and_duplicates_stay_duplicates(
    lab: ServerRuntime, events: EventFactory
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=400)
    stream = [_denial(events) for _ in range(4)]
    for event in stream[:3]:
        assert _feed(lab, event, old) is Outcome.ACCEPTED
    assert _feed(lab, stream[3], now) is Outcome.ACCEPTED
    lab.bus.handle(cmds.IngestEvent(events_topic(SITE, "laser"), b"garbage", received_at=old))
    denials = _count(lab, BadgeDenial)

    assert lab.bus.handle(cmds.PurgeRawEvents(365, at=now)) == 4  # 3 old + the unreadable one
    assert _count(lab, RawEvent) == 1
    # A resent event whose row was purged is still recognised: nothing counted twice.
    assert _feed(lab, stream[1], now) is Outcome.DUPLICATE
    assert _count(lab, BadgeDenial) == denials
    with lab.new_uow() as uow:
        [entry] = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "raw_event.purge")
        ).all()
        assert entry.actor_id is None
    assert lab.bus.handle(cmds.PurgeRawEvents(365, at=now)) == 0


def test_privacy_purge_keeps_events_above_a_gap(lab: ServerRuntime, events: EventFactory) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=400)
    one, two, three = (_denial(events) for _ in range(3))
    _feed(lab, one, old)
    _feed(lab, three, old)  # seq 2 is missing: acked stays at 1
    assert lab.bus.handle(cmds.PurgeRawEvents(30, at=now)) == 1
    assert _feed(lab, three, now) is Outcome.DUPLICATE  # still stored
    _feed(lab, two, now)
    with lab.new_uow() as uow:
        stream = uow.streams.get_or_create("laser", events.outbox_id)
        assert stream.acked_seq == 3
    assert _count(lab, BadgeDenial) == 3


def test_privacy_purge_rules(lab: ServerRuntime) -> None:
    with pytest.raises(DomainError):
        lab.bus.handle(cmds.PurgeRawEvents(0))
    with pytest.raises(PermissionDeniedError):
        lab.bus.handle(cmds.PurgeRawEvents(30, actor=MONA))
    assert lab.bus.handle(cmds.PurgeRawEvents(30, actor=ROOT)) == 0


def test_privacy_retention_worker_purges_in_the_background(
    lab: ServerRuntime, events: EventFactory
) -> None:
    _feed(lab, _denial(events), datetime.now(UTC) - timedelta(days=40))
    worker = RetentionWorker(lab.bus, 30, interval_s=3600, first_delay_s=0.01)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert worker.runs == 1
    assert _count(lab, RawEvent) == 0


def test_privacy_erased_staff_leave_every_snapshot(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.RegisterBadge("mona", "04ABCDEF"))
    lab.bus.handle(cmds.PublishConfigs(frozenset({"laser"})))
    assert _snapshot_has(sent, "04ABCDEF", staff=True)  # managers are staff on every machine
    result = lab.bus.handle(cmds.EraseMember("mona", actor=ROOT))
    assert result.machines_republished == ("laser",)
    assert not _snapshot_has(sent, "04ABCDEF", staff=True)
