"""Handlers for logins (cookie sessions) and personal API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from server.adapters.orm import ApiToken, LoginSession, Member
from server.adapters.secrets import new_token, token_hash, verify_password
from server.domain.access import Principal, Role
from server.domain.errors import AuthenticationError, DomainError, NotFoundError
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

LOGIN_LIFETIME = timedelta(hours=12)
MAX_TOKENS_PER_MEMBER = 20


@dataclass(frozen=True)
class LoginResult:
    member_id: str
    token: str  # goes into the HttpOnly cookie
    csrf_token: str  # echoed by the browser in a header or form field


@dataclass(frozen=True)
class NewApiToken:
    token_id: int
    name: str
    token: str  # shown once


def principal_of(uow: SqlAlchemyUnitOfWork, member: Member) -> Principal:
    """The member's powers now: lab-wide roles, and trainer of the types in which their
    trainer-level training is live (not revoked, expired or lapsed)."""
    return Principal(
        member_id=member.id,
        roles=frozenset(Role(r.role) for r in member.roles),
        trainer_of=frozenset(uow.training_types.trainer_of(member.id)),
    )


def login(cmd: cmds.Login, uow: SqlAlchemyUnitOfWork) -> LoginResult:
    member = uow.members.by_email(cmd.email.strip().lower())
    password_hash = member.password_hash if member else None
    ok = verify_password(password_hash, cmd.password)  # runs even for unknown emails
    if member is None or not ok or not member.active or member.erased_at is not None:
        raise AuthenticationError("wrong email or password")
    token, csrf = new_token(), new_token()
    uow.credentials.add(
        LoginSession(
            token_hash=token_hash(token),
            member_id=member.id,
            csrf_token=csrf,
            created_at=cmd.at,
            expires_at=cmd.at + LOGIN_LIFETIME,
        )
    )
    uow.commit()
    return LoginResult(member.id, token, csrf)


def logout(cmd: cmds.Logout, uow: SqlAlchemyUnitOfWork) -> None:
    found = uow.credentials.login_session(token_hash(cmd.token))
    if found is not None:
        uow.credentials.delete_login_session(found)
        uow.commit()


def create_api_token(cmd: cmds.CreateApiToken, uow: SqlAlchemyUnitOfWork) -> NewApiToken:
    if cmd.actor is not None and cmd.actor.member_id != cmd.member_id:
        guards.require(cmd.actor, Role.ADMIN)
    member = guards.member(uow, cmd.member_id)
    live = [t for t in uow.credentials.api_tokens_of(member.id) if t.revoked_at is None]
    if len(live) >= MAX_TOKENS_PER_MEMBER:
        raise DomainError(f"at most {MAX_TOKENS_PER_MEMBER} live tokens: revoke one first")
    token = new_token()
    api_token = ApiToken(
        member_id=member.id, name=cmd.name, token_hash=token_hash(token), created_at=cmd.at
    )
    uow.credentials.add(api_token)
    uow.flush()
    record(
        uow, actor=cmd.actor, action="api_token.create", object_type="api_token",
        object_id=api_token.id, before=None, after={"member_id": member.id},
        at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return NewApiToken(api_token.id, api_token.name, token)


def revoke_api_token(cmd: cmds.RevokeApiToken, uow: SqlAlchemyUnitOfWork) -> None:
    if cmd.actor is not None and cmd.actor.member_id != cmd.member_id:
        guards.require(cmd.actor, Role.ADMIN)
    token = next(
        (t for t in uow.credentials.api_tokens_of(cmd.member_id) if t.id == cmd.token_id), None
    )
    if token is None:
        raise NotFoundError(f"no token {cmd.token_id}")
    if token.revoked_at is None:
        token.revoked_at = cmd.at
        record(
            uow, actor=cmd.actor, action="api_token.revoke", object_type="api_token",
            object_id=token.id, before=None, after=None, at=cmd.at,
        )  # fmt: skip
        uow.commit()
