"""Handlers for members, their roles, badges and categories."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from protocol import CommandKind, ProtocolError, normalize_uid
from server.adapters.orm import Badge, Enrollment, Member, MemberCategory, MemberRole
from server.adapters.secrets import hash_password, token_hash, verify_password
from server.domain.access import GRANTABLE_ROLES, Role
from server.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
)
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.controller_commands import send_command
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

BADGE_STATUSES = ("active", "lost", "blocked")
MIN_PASSWORD_LENGTH = 10


def member_facts(member: Member) -> dict[str, Any]:
    """What the audit log keeps of a member: no personal data, only ids and flags."""
    return {
        "category": member.category,
        "active": member.active,
        "roles": sorted(r.role for r in member.roles),
    }


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def _category(uow: SqlAlchemyUnitOfWork, category_id: str) -> str:
    if uow.categories.get(category_id) is None:
        raise DomainError(f"unknown member category {category_id!r}")
    return category_id


def add_member(cmd: cmds.AddMember, uow: SqlAlchemyUnitOfWork) -> str:
    guards.require(cmd.actor, Role.MANAGER)
    email = cmd.email.strip().lower() if cmd.email else None
    if email and uow.members.by_email(email):
        raise ConflictError(f"a member with email {email} already exists")
    member_id = cmd.member_id or uuid.uuid4().hex
    if uow.members.get(member_id):
        raise ConflictError(f"member {member_id} already exists")
    if cmd.password is not None:
        _check_password(cmd.password)
    member = Member(
        id=member_id,
        name=cmd.name,
        email=email,
        category=_category(uow, cmd.category),
        active=True,
        created_at=cmd.at,
        password_hash=hash_password(cmd.password) if cmd.password else None,
    )
    uow.members.add(member)
    try:
        uow.flush()
    except IntegrityError as exc:
        # Another request added the same email (or id) since the checks above.
        taken = f"email {email}" if email else f"id {member_id}"
        raise ConflictError(f"a member with {taken} already exists") from exc
    record(
        uow, actor=cmd.actor, action="member.create", object_type="member", object_id=member_id,
        before=None, after=member_facts(member), at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return member_id


def update_member(cmd: cmds.UpdateMember, uow: SqlAlchemyUnitOfWork) -> None:
    member = guards.member(uow, cmd.member_id)
    own = cmd.actor is not None and cmd.actor.member_id == cmd.member_id
    if cmd.category is not None or cmd.active is not None or not own:
        guards.require(cmd.actor, Role.MANAGER)
    guards.within_reach(cmd.actor, member)
    if cmd.active is False:
        guards.keep_an_active_admin(uow, member.id)
    before = member_facts(member)
    changed: list[str] = []
    if cmd.name is not None and cmd.name != member.name:
        member.name, changed = cmd.name, [*changed, "name"]
    if cmd.email is not None and _change_email(uow, member, cmd.email, own=own):
        changed = [*changed, "email"]
    if cmd.category is not None:
        member.category = _category(uow, cmd.category)
    if cmd.active is not None:
        member.active = cmd.active
        if not cmd.active:
            uow.credentials.end_all_for(member.id, cmd.at)
    after = {**member_facts(member), "personal_fields_changed": changed}
    record(
        uow, actor=cmd.actor, action="member.update", object_type="member", object_id=member.id,
        before=before, after=after, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    if cmd.active is not None:
        uow.machines_to_publish |= guards.machines_of_member(uow, member.id)


def _change_email(uow: SqlAlchemyUnitOfWork, member: Member, raw: str, *, own: bool) -> bool:
    """Give the member the email; True if it changed.

    Members changing their own email are rate-limited and are not told whether the
    address belongs to someone else (no account enumeration); managers are.
    """
    email = raw.strip().lower()
    if email == member.email:
        return False
    if own:
        key = f"email-change:{member.id}"
        uow.limiter.check(key, what="email changes")
        uow.limiter.failed(key)  # every change counts: probing addresses is bounded
    other = uow.members.by_email(email)
    if other is not None and other.id != member.id:
        if own:
            raise DomainError("this email address cannot be used: choose another one")
        raise ConflictError(f"a member with email {email} already exists")
    member.email = email
    return True


def set_roles(cmd: cmds.SetRoles, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.ADMIN)
    if Role.ADMIN not in cmd.roles:
        guards.keep_an_active_admin(uow, cmd.member_id)
    member = guards.member(uow, cmd.member_id)
    unknown = set(cmd.roles) - GRANTABLE_ROLES
    if unknown:
        raise DomainError(f"roles that can be given: {', '.join(sorted(GRANTABLE_ROLES))}")
    if cmd.actor is not None and cmd.actor.member_id == member.id and Role.ADMIN not in cmd.roles:
        raise DomainError("you cannot remove your own admin role")
    before = member_facts(member)
    # Managers' badges are on every machine (maintenance override): republish all.
    uow.machines_to_publish |= set(uow.machines.ids())
    member.roles = [MemberRole(member_id=member.id, role=r.value) for r in sorted(cmd.roles)]
    uow.flush()
    record(
        uow, actor=cmd.actor, action="member.roles", object_type="member", object_id=member.id,
        before=before, after=member_facts(member), at=cmd.at,
    )  # fmt: skip
    uow.commit()


def set_password(cmd: cmds.SetPassword, uow: SqlAlchemyUnitOfWork) -> None:
    member = guards.member(uow, cmd.member_id)
    own = cmd.actor is not None and cmd.actor.member_id == member.id
    if own:
        _check_current_password(uow, member, cmd.current_password or "")
    else:
        guards.require(cmd.actor, Role.ADMIN)
    _check_password(cmd.password)
    member.password_hash = hash_password(cmd.password)
    # Whoever knew the old password is logged out: every other login and every token ends.
    kept = token_hash(cmd.keep_login) if own and cmd.keep_login else None
    uow.credentials.end_all_for(member.id, cmd.at, keep_login=kept)
    record(
        uow, actor=cmd.actor, action="member.password", object_type="member", object_id=member.id,
        before=None, after=None, at=cmd.at,
    )  # fmt: skip
    uow.commit()


def _check_current_password(uow: SqlAlchemyUnitOfWork, member: Member, password: str) -> None:
    """Raise unless `password` is the member's; failures are rate-limited per member."""
    key = f"password-check:{member.id}"
    uow.limiter.check(key, what="wrong current passwords")
    if not verify_password(member.password_hash, password):
        uow.limiter.failed(key)
        raise AuthenticationError("the current password is wrong")
    uow.limiter.succeeded(key)


def add_category(cmd: cmds.AddCategory, uow: SqlAlchemyUnitOfWork) -> str:
    if cmd.actor is not None and not (cmd.actor.has(Role.TREASURER) or cmd.actor.is_manager):
        raise PermissionDeniedError("this needs the treasurer or manager role")
    if uow.categories.get(cmd.category_id):
        raise ConflictError(f"category {cmd.category_id} already exists")
    uow.categories.add(MemberCategory(id=cmd.category_id, name=cmd.name))
    record(
        uow, actor=cmd.actor, action="category.create", object_type="category",
        object_id=cmd.category_id, before=None, after={"name": cmd.name}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return cmd.category_id


def _attach_badge(
    uow: SqlAlchemyUnitOfWork, member: Member, raw_uid: str, cmd: Any, action: str
) -> Badge:
    try:
        uid = normalize_uid(raw_uid)
    except ProtocolError as exc:
        raise DomainError(str(exc)) from exc
    if uow.badges.by_uid(uid):
        raise ConflictError(f"badge {uid} is already registered")
    badge = Badge(uid=uid, member_id=member.id, status="active", created_at=cmd.at)
    uow.badges.add(badge)
    uow.flush()
    record(
        uow, actor=cmd.actor, action=action, object_type="badge", object_id=badge.id,
        before=None, after={"member_id": member.id, "status": "active"}, at=cmd.at,
    )  # fmt: skip
    return badge


def register_badge(cmd: cmds.RegisterBadge, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.MANAGER)
    member = guards.member(uow, cmd.member_id)
    guards.within_reach(cmd.actor, member)
    badge = _attach_badge(uow, member, cmd.uid, cmd, "badge.create")
    uow.commit()
    uow.machines_to_publish |= guards.machines_of_member(uow, member.id)
    return badge.id


def set_badge_status(cmd: cmds.SetBadgeStatus, uow: SqlAlchemyUnitOfWork) -> None:
    guards.require(cmd.actor, Role.MANAGER)
    badge = uow.badges.get(cmd.badge_id)
    if badge is None or badge.status == "erased":
        raise NotFoundError(f"no badge {cmd.badge_id}")
    if cmd.status not in BADGE_STATUSES:
        raise DomainError(f"badge status must be one of: {', '.join(BADGE_STATUSES)}")
    guards.within_reach(cmd.actor, guards.member(uow, badge.member_id))
    before = {"status": badge.status}
    badge.status = cmd.status
    record(
        uow, actor=cmd.actor, action="badge.status", object_type="badge", object_id=badge.id,
        before=before, after={"status": badge.status}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    uow.machines_to_publish |= guards.machines_of_member(uow, badge.member_id)


def start_enrollment(cmd: cmds.StartEnrollment, uow: SqlAlchemyUnitOfWork) -> int:
    guards.require(cmd.actor, Role.MANAGER)
    machine = guards.machine(uow, cmd.machine_id)
    guards.within_reach(cmd.actor, guards.member(uow, cmd.member_id))
    if not 10 <= cmd.window_s <= 900:
        raise DomainError("the enrollment window must be between 10 and 900 seconds")
    enrollment = Enrollment(
        machine_id=cmd.machine_id,
        member_id=cmd.member_id,
        requested_by=cmd.actor.member_id if cmd.actor else None,
        created_at=cmd.at,
        expires_at=cmd.at + timedelta(seconds=cmd.window_s),
    )
    uow.enrollments.add(enrollment)
    # The controller reports the next badge as badge_enrolled instead of deciding on it;
    # an older controller denies it as unknown, which completes the enrollment too.
    send_command(uow, machine, CommandKind.ENROLL_BADGE, cmd.at, timeout_s=cmd.window_s)
    uow.commit()
    return enrollment.id


def complete_enrollment(
    uow: SqlAlchemyUnitOfWork, machine_id: str, uid: str, at: Any
) -> Enrollment | None:
    """Give an unknown badge just tapped on the machine to the member being enrolled."""
    enrollment = uow.enrollments.pending(machine_id, at)
    if enrollment is None or uow.badges.by_uid(uid) is not None:
        return None
    member = uow.members.get(enrollment.member_id)
    if member is None or member.erased_at is not None:
        return None
    system = cmds.RegisterBadge(member.id, uid, at=at)
    _attach_badge(uow, member, uid, system, "badge.enroll")
    enrollment.badge_uid = uid
    enrollment.completed_at = at
    uow.machines_to_publish |= guards.machines_of_member(uow, member.id)
    return enrollment
