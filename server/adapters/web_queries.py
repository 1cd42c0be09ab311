"""Read-side queries of the web pages: sessions in a period, utilisation aggregates,
contributions credited."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.adapters.billing_repository import AUTOMATIC_OF_SOURCE
from server.adapters.orm import ProblemReport, RawEvent, Training, UsageSession
from server.adapters.orm_billing import BillingClaim, BillingContributionType, BillingLedgerEntry
from server.domain.utilisation import Contribution


def sessions_between(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    member_id: str | None = None,
    supervisor_id: str | None = None,
) -> Sequence[UsageSession]:
    """Sessions started in [start, end), oldest first, of a member or confirmed by a
    supervisor if given."""
    query = select(UsageSession).where(
        UsageSession.started_at >= start, UsageSession.started_at < end
    )
    if member_id is not None:
        query = query.where(UsageSession.member_id == member_id)
    if supervisor_id is not None:
        query = query.where(UsageSession.supervisor_member_id == supervisor_id)
    return session.scalars(query.order_by(UsageSession.started_at, UsageSession.id)).all()


def supervised_by(session: Session, supervisor_id: str, limit: int = 200) -> Sequence[UsageSession]:
    """Sessions the supervisor confirmed with their badge, newest first."""
    query = (
        select(UsageSession)
        .where(UsageSession.supervisor_member_id == supervisor_id)
        .order_by(UsageSession.started_at.desc())
        .limit(limit)
    )
    return session.scalars(query).all()


def latest_problem_reports(session: Session, limit: int = 50) -> Sequence[ProblemReport]:
    query = select(ProblemReport).order_by(ProblemReport.created_at.desc()).limit(limit)
    return session.scalars(query).all()


def trainings_granted_between(
    session: Session, start: datetime, end: datetime
) -> list[tuple[str, datetime]]:
    """(training type, granted at) of the trainings granted in [start, end)."""
    query = select(Training.training_type_id, Training.granted_at).where(
        Training.granted_at >= start, Training.granted_at < end
    )
    return [(type_id, granted) for type_id, granted in session.execute(query).all()]


def contributions_between(session: Session, start: datetime, end: datetime) -> list[Contribution]:
    """Contributions credited in [start, end) (the ledger's earn entries), each with the
    contribution type it was credited for: the claim's type, or the type credited
    automatically for what the system observed."""
    e = BillingLedgerEntry
    earned = session.execute(
        select(e.member_id, e.source_type, e.source_id, e.at, e.minutes).where(
            e.kind == "earn", e.at >= start, e.at < end
        )
    ).all()
    claim_ids = {int(source_id) for _, kind, source_id, _, _ in earned if kind == "claim"}
    claims = select(BillingClaim.id, BillingClaim.contribution_type_id).where(
        BillingClaim.id.in_(claim_ids)
    )
    claim_types = {claim_id: type_id for claim_id, type_id in session.execute(claims)}
    types = select(BillingContributionType.automatic_source, BillingContributionType.id).where(
        BillingContributionType.automatic_source.is_not(None)
    )
    automatic = {source: type_id for source, type_id in session.execute(types)}
    found = []
    for member_id, kind, source_id, at, minutes in earned:
        if kind == "claim":
            type_id = claim_types.get(int(source_id))
        else:
            type_id = automatic.get(AUTOMATIC_OF_SOURCE.get(kind, ""))
        found.append(Contribution(type_id or kind, member_id, at, int(minutes)))
    return found


@dataclass(frozen=True)
class Fault:
    at: datetime
    code: str
    message: str


def recent_faults(session: Session, controller_id: str, limit: int = 10) -> list[Fault]:
    """The controller's latest `fault` events (kept as received: they change no state)."""
    query = (
        select(RawEvent)
        .where(
            RawEvent.controller_id == controller_id,
            RawEvent.kind == "fault",
            RawEvent.status == "accepted",
        )
        .order_by(RawEvent.received_at.desc())
        .limit(limit)
    )
    faults = []
    for event in session.scalars(query).all():
        try:
            data = json.loads(event.payload).get("data", {})
        except (ValueError, AttributeError):
            data = {}
        faults.append(
            Fault(event.received_at, str(data.get("code", "")), str(data.get("message", "")))
        )
    return faults
