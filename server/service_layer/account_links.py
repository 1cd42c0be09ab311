"""One-time set-password links (invitations, forgotten passwords) and problem reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.adapters.orm import AccountLink, ProblemReport
from server.adapters.secrets import new_token, token_hash
from server.domain.access import Role
from server.domain.errors import DomainError
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.audit import record
from server.service_layer.members import set_password
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

PURPOSES = ("invite", "reset")
MAX_PROBLEM_TEXT = 2000


class InvalidLinkError(DomainError):
    """The link is unknown, already used or expired."""


@dataclass(frozen=True)
class IssuedLink:
    member_id: str
    member_name: str
    email: str | None
    purpose: str
    token: str  # goes into the URL only; the table keeps its hash
    expires_at: datetime


def _issue(
    uow: SqlAlchemyUnitOfWork, member_id: str, purpose: str, hours: int, at: datetime,
    created_by: str | None,
) -> IssuedLink:  # fmt: skip
    """A new link for the member; their earlier unused links stop working."""
    member = guards.member(uow, member_id)
    for old in uow.account_links.unused_of(member.id):
        old.used_at = at
    token = new_token()
    link = AccountLink(
        token_hash=token_hash(token),
        member_id=member.id,
        purpose=purpose,
        created_by=created_by,
        created_at=at,
        expires_at=at + timedelta(hours=hours),
    )
    uow.account_links.add(link)
    return IssuedLink(member.id, member.name, member.email, purpose, token, link.expires_at)


def issue_account_link(cmd: cmds.IssueAccountLink, uow: SqlAlchemyUnitOfWork) -> IssuedLink:
    guards.require(cmd.actor, Role.MANAGER)
    if cmd.purpose not in PURPOSES:
        raise DomainError(f"purpose must be one of: {', '.join(PURPOSES)}")
    member = guards.member(uow, cmd.member_id)
    if not member.active:
        raise DomainError("the member is deactivated: reactivate them first")
    actor_id = cmd.actor.member_id if cmd.actor else None
    issued = _issue(uow, member.id, cmd.purpose, cmd.valid_hours, cmd.at, actor_id)
    record(
        uow, actor=cmd.actor, action=f"account_link.{cmd.purpose}", object_type="member",
        object_id=member.id, before=None, after={"expires_at": issued.expires_at}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return issued


def request_password_reset(
    cmd: cmds.RequestPasswordReset, uow: SqlAlchemyUnitOfWork
) -> IssuedLink | None:
    """A link for the active member with this email, or None: the caller must answer the
    same either way, so that nobody learns who has an account."""
    member = uow.members.by_email(cmd.email.strip().lower())
    if member is None or not member.active or member.erased_at is not None:
        return None
    issued = _issue(uow, member.id, "reset", cmd.valid_hours, cmd.at, None)
    record(
        uow, actor=None, action="account_link.reset_requested", object_type="member",
        object_id=member.id, before=None, after={"expires_at": issued.expires_at}, at=cmd.at,
        system_actor="web",
    )  # fmt: skip
    uow.commit()
    return issued


def link_member(uow: SqlAlchemyUnitOfWork, token: str, at: datetime) -> AccountLink:
    """The live link behind the token; InvalidLinkError if unknown, used or expired."""
    link = uow.account_links.get(token_hash(token))
    if link is None or link.used_at is not None or link.expires_at <= at:
        raise InvalidLinkError("this link is not valid any more: ask for a new one")
    member = uow.members.get(link.member_id)
    if member is None or not member.active or member.erased_at is not None:
        raise InvalidLinkError("this link is not valid any more: ask for a new one")
    return link


def use_account_link(cmd: cmds.UseAccountLink, uow: SqlAlchemyUnitOfWork) -> str:
    """Set the member's password through the link and spend the link; the member id."""
    link = link_member(uow, cmd.token, cmd.at)
    link.used_at = cmd.at
    # The password change itself (rules, audit, ending other logins) is the one handler's.
    set_password(cmds.SetPassword(link.member_id, cmd.password, at=cmd.at), uow)
    return link.member_id


def report_problem(cmd: cmds.ReportProblem, uow: SqlAlchemyUnitOfWork) -> int:
    if cmd.actor is None:
        raise DomainError("log in to report a problem")
    machine = guards.machine(uow, cmd.machine_id)
    text = cmd.text.strip()
    if not text:
        raise DomainError("describe the problem")
    report = ProblemReport(
        machine_id=machine.id,
        member_id=cmd.actor.member_id,
        text=text[:MAX_PROBLEM_TEXT],
        created_at=cmd.at,
    )
    uow.problem_reports.add(report)
    uow.flush()
    record(
        uow, actor=cmd.actor, action="machine.problem_report", object_type="machine",
        object_id=machine.id, before=None, after={"report_id": report.id}, at=cmd.at,
    )  # fmt: skip
    uow.commit()
    return report.id
