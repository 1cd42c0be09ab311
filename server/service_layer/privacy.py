"""Personal data (GDPR): a member's export, erasure by pseudonymisation, retention of raw events.

Erasure keeps the rows that the lab's accounting needs (usage sessions, trainings, denials,
the audit log) linked to the member's id, which on its own names nobody once the member's
name, email, password and badge UIDs are gone. The audit log never holds names or emails
(see `audit.record`), so it stays append-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.adapters.orm import AuditEntry
from server.adapters.repository import AuditQueries, PersonalDataQueries, RawEventRetention
from server.domain.access import Role
from server.domain.errors import DomainError, PermissionDeniedError
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.periodic import ExclusiveRun, PeriodicWorker
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

ERASED_STATUS = "erased"
ERASED_UID = "ERASED"  # a denial whose badge is not among the member's (no real UID kept)
ERASED_TOKEN_NAME = "erased"  # noqa: S105 - a placeholder name, not a secret
MAX_RETENTION_DAYS = 100 * 365


@dataclass(frozen=True)
class ErasureResult:
    member_id: str
    name: str
    erased_at: datetime
    badges_erased: int
    machines_republished: tuple[str, ...]


def pseudonym(member_id: str) -> str:
    """The name an erased member keeps: stable, and not derived from personal data."""
    return f"Erased member {hashlib.sha256(member_id.encode()).hexdigest()[:8]}"


def erased_badge_uid(badge_id: int) -> str:
    """What replaces an erased badge's UID: unique per badge, never a valid (hex) UID."""
    return f"ERASED-{badge_id}"


def parse_json(text: str | None) -> Any:
    """An audit entry's before/after column back as a JSON value."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def audit_entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": parse_json(entry.before),
        "after": parse_json(entry.after),
    }


# -- export ---------------------------------------------------------------------------------


def export_member(uow: SqlAlchemyUnitOfWork, member_id: str, at: datetime) -> dict[str, Any]:
    """Everything the lab keeps about the member, as JSON-ready data (secrets left out)."""
    member = guards.member(uow, member_id)
    personal = PersonalDataQueries(uow.session)
    category = uow.categories.get(member.category)
    badges = list(uow.badges.of_member(member.id))
    uids = [b.uid for b in badges]
    trainings = list(personal.trainings_of(member.id))
    tokens = list(uow.credentials.api_tokens_of(member.id))
    objects = [("badge", str(b.id)) for b in badges]
    objects += [("training", str(t.id)) for t in trainings]
    objects += [("api_token", str(t.id)) for t in tokens]
    return {
        "exported_at": at,
        "member": {
            "id": member.id,
            "name": member.name,
            "email": member.email,
            "category": member.category,
            "category_name": category.name if category else None,
            "active": member.active,
            "created_at": member.created_at,
            "roles": sorted(r.role for r in member.roles),
            "trainer_of": sorted(uow.training_types.trainer_of(member.id)),
            "has_password": member.password_hash is not None,
        },
        "badges": [
            {"id": b.id, "uid": b.uid, "status": b.status, "created_at": b.created_at}
            for b in badges
        ],
        "trainings": [
            {
                "id": t.id,
                "training_type_id": t.training_type_id,
                "level": t.level,
                "granted_by": t.granted_by,
                "granted_at": t.granted_at,
                "expires_at": t.expires_at,
                "revoked_at": t.revoked_at,
                "revoked_by": t.revoked_by,
            }
            for t in trainings
        ],
        "sessions": [
            {
                "id": s.id,
                "machine_id": s.machine_id,
                "badge_uid": s.badge_uid,
                "level": s.level,
                "started_at": s.started_at,
                "ended_at": s.ended_at,
                "end_reason": s.end_reason,
                "elapsed_seconds": s.elapsed_seconds,
                "busy_seconds": s.busy_seconds,
                "stale_snapshot": s.stale_snapshot,
            }
            for s in personal.sessions_of(member.id, uids)
        ],
        "denials": [
            {
                "id": d.id,
                "machine_id": d.machine_id,
                "badge_uid": d.badge_uid,
                "reason": d.reason,
                "at": d.at,
            }
            for d in personal.denials_of(member.id, uids)
        ],
        "enrollments": [
            {
                "id": e.id,
                "machine_id": e.machine_id,
                "requested_by": e.requested_by,
                "created_at": e.created_at,
                "expires_at": e.expires_at,
                "badge_uid": e.badge_uid,
                "completed_at": e.completed_at,
            }
            for e in personal.enrollments_of(member.id)
        ],
        "api_tokens": [
            {
                "id": t.id,
                "name": t.name,
                "created_at": t.created_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
            for t in tokens
        ],
        "audit": [audit_entry_dict(e) for e in AuditQueries(uow.session).about(member.id, objects)],
    }


# -- erasure --------------------------------------------------------------------------------


def erase_member(cmd: cmds.EraseMember, uow: SqlAlchemyUnitOfWork) -> ErasureResult:
    """Pseudonymise the member: name, email, password and badge UIDs are gone for good."""
    guards.require(cmd.actor, Role.MANAGER)
    member = guards.member(uow, cmd.member_id)  # an erased member is not found
    if cmd.actor is not None and cmd.actor.member_id == member.id:
        raise DomainError("you cannot erase yourself")
    held = sorted(r.role for r in member.roles)
    if held and cmd.actor is not None and not cmd.actor.has(Role.ADMIN):
        raise PermissionDeniedError(
            f"erasing a member with the role(s) {', '.join(held)} needs the admin role"
        )
    guards.keep_an_active_admin(uow, member.id)
    # Before anything is revoked: the machines whose snapshots list the member's badges
    # (all of them for a member with a lab-wide role, who may be listed as staff).
    machines = guards.machines_of_member(uow, member.id)
    if held:
        machines |= set(uow.machines.ids())
    personal = PersonalDataQueries(uow.session)
    badges = list(uow.badges.of_member(member.id))
    replacement = {b.uid: erased_badge_uid(b.id) for b in badges}
    before = {
        "category": member.category,
        "active": member.active,
        "roles": held,
        "badges": len(badges),
    }

    for usage in personal.sessions_of(member.id, list(replacement)):
        usage.badge_uid = None
    for denial in personal.denials_of(member.id, list(replacement)):
        denial.badge_uid = replacement.get(denial.badge_uid, ERASED_UID)
    for enrollment in personal.enrollments_of(member.id):
        enrollment.badge_uid = None
    for uid, placeholder in replacement.items():
        if uid == placeholder:
            continue
        # Stored payloads are JSON: the UID as a whole string value, never a part of another.
        quoted, redacted = json.dumps(uid), json.dumps(placeholder)
        for raw in personal.raw_events_mentioning(quoted):
            raw.payload = raw.payload.replace(quoted, redacted)
    uow.flush()  # the old UIDs leave every other row before the badges change
    for badge in badges:
        badge.uid = replacement[badge.uid]
        badge.status = ERASED_STATUS
    revoked_by = cmd.actor.member_id if cmd.actor else "erasure"
    for training in personal.trainings_of(member.id):
        if training.revoked_at is None:
            training.revoked_at = cmd.at
            training.revoked_by = revoked_by
    uow.credentials.end_all_for(member.id, cmd.at)
    for token in uow.credentials.api_tokens_of(member.id):
        token.name = ERASED_TOKEN_NAME  # what the member typed goes with them
    member.name = pseudonym(member.id)
    member.email = None
    member.password_hash = None
    member.active = False
    member.erased_at = cmd.at
    member.roles = []
    uow.flush()
    record(
        uow, actor=cmd.actor, action="member.erase", object_type="member", object_id=member.id,
        before=before,
        after={"category": member.category, "active": False, "roles": [], "erased": True},
        at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= machines
    return ErasureResult(
        member_id=member.id,
        name=member.name,
        erased_at=cmd.at,
        badges_erased=len(badges),
        machines_republished=tuple(sorted(machines)),
    )


# -- retention ------------------------------------------------------------------------------


def purge_raw_events(cmd: cmds.PurgeRawEvents, uow: SqlAlchemyUnitOfWork) -> int:
    """Delete raw events received more than N days ago; returns how many went.

    Sessions, denials and bills built from them stay. An event resent after its row is
    purged is still a duplicate: ingest checks `seq <= outbox_stream.acked_seq` first, and
    rows above an unfilled gap (seq > acked_seq) are kept for the ack computation.
    """
    guards.require(cmd.actor, Role.ADMIN)
    if not 1 <= cmd.older_than_days <= MAX_RETENTION_DAYS:
        raise DomainError(f"older_than_days must be between 1 and {MAX_RETENTION_DAYS}")
    cutoff = cmd.at - timedelta(days=cmd.older_than_days)
    count = RawEventRetention(uow.session).purge(cutoff)
    if count:
        record(
            uow, actor=cmd.actor, action="raw_event.purge", object_type="raw_event",
            object_id=f"before {cutoff.isoformat()}", before=None,
            after={"deleted": count, "older_than_days": cmd.older_than_days}, at=cmd.at,
        )  # fmt: skip
    uow.commit()
    return count


class RetentionWorker(PeriodicWorker):
    """Purges raw events past the retention period once at start, then every `interval_s`.

    Wire it in the server process with
    `RetentionWorker(runtime.bus, settings.raw_event_retention_days).start()` and
    `.stop()` on shutdown. With `exclusive`, one server process purges at a time.
    """

    name = "retention"

    def __init__(
        self,
        bus: Any,
        retention_days: int,
        *,
        interval_s: float = 24 * 3600,
        first_delay_s: float = 60.0,
        exclusive: ExclusiveRun | None = None,
    ) -> None:
        super().__init__(period_s=interval_s, first_delay_s=first_delay_s, exclusive=exclusive)
        self.bus = bus
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.runs = 0

    def run_once(self) -> int:
        count: int = self.bus.handle(cmds.PurgeRawEvents(self.retention_days))
        self.runs += 1
        if count:
            logger.info("retention: purged %d raw events older than %d days", count,
                        self.retention_days)  # fmt: skip
        return count
