"""Repositories: the queries the service layer needs, over one SQLAlchemy session."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.adapters.orm import (
    Badge,
    BadgeDenial,
    Controller,
    Machine,
    Member,
    OutboxStream,
    RawEvent,
    Training,
    UsageSession,
)


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session


class MemberRepository(_Repository):
    def get(self, member_id: str) -> Member | None:
        return self.session.get(Member, member_id)

    def add(self, member: Member) -> None:
        self.session.add(member)

    def by_email(self, email: str) -> Member | None:
        return self.session.scalar(select(Member).where(Member.email == email))

    def page(self, *, limit: int = 100, offset: int = 0) -> Sequence[Member]:
        query = select(Member).order_by(Member.name).limit(limit).offset(offset)
        return self.session.scalars(query).all()

    def names(self, member_ids: set[str]) -> dict[str, str]:
        """Display names of the given members."""
        if not member_ids:
            return {}
        query = select(Member.id, Member.name).where(Member.id.in_(member_ids))
        return {member_id: name for member_id, name in self.session.execute(query).all()}


class BadgeRepository(_Repository):
    def add(self, badge: Badge) -> None:
        self.session.add(badge)

    def by_uid(self, uid: str) -> Badge | None:
        return self.session.scalar(select(Badge).where(Badge.uid == uid))


class MachineRepository(_Repository):
    def get(self, machine_id: str) -> Machine | None:
        return self.session.get(Machine, machine_id)

    def add(self, machine: Machine) -> None:
        self.session.add(machine)

    def all(self) -> Sequence[Machine]:
        return self.session.scalars(select(Machine).order_by(Machine.name)).all()

    def ids(self) -> list[str]:
        return list(self.session.scalars(select(Machine.id)).all())


class ControllerRepository(_Repository):
    def get(self, controller_id: str) -> Controller | None:
        return self.session.get(Controller, controller_id)

    def add(self, controller: Controller) -> None:
        self.session.add(controller)

    def for_machine(self, machine_id: str) -> Controller | None:
        return self.session.scalar(select(Controller).where(Controller.machine_id == machine_id))


class TrainingRepository(_Repository):
    def add(self, training: Training) -> None:
        self.session.add(training)

    def current(self, member_id: str, machine_id: str) -> Training | None:
        """The member's unrevoked training on the machine, if any."""
        return self.session.scalar(
            select(Training).where(
                Training.member_id == member_id,
                Training.machine_id == machine_id,
                Training.revoked_at.is_(None),
            )
        )

    def badge_grants(
        self, machine_id: str, now: datetime
    ) -> Sequence[tuple[str, str, str, datetime | None]]:
        """(badge uid, member id, level, expiry) for every usable badge on the machine."""
        query = (
            select(Badge.uid, Member.id, Training.level, Training.expires_at)
            .join(Member, Member.id == Training.member_id)
            .join(Badge, Badge.member_id == Member.id)
            .where(
                Training.machine_id == machine_id,
                Training.revoked_at.is_(None),
                or_(Training.expires_at.is_(None), Training.expires_at > now),
                Member.active.is_(True),
                Badge.status == "active",
            )
        )
        return [tuple(row) for row in self.session.execute(query).all()]  # type: ignore[misc]


class UsageSessionRepository(_Repository):
    def get(self, session_id: str) -> UsageSession | None:
        return self.session.get(UsageSession, session_id)

    def add(self, usage: UsageSession) -> None:
        self.session.add(usage)

    def open_sessions(self) -> Sequence[UsageSession]:
        query = select(UsageSession).where(UsageSession.ended_at.is_(None))
        return self.session.scalars(query).all()

    def page(
        self,
        *,
        machine_id: str | None = None,
        member_id: str | None = None,
        open_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[Sequence[UsageSession], int]:
        query = select(UsageSession)
        if machine_id:
            query = query.where(UsageSession.machine_id == machine_id)
        if member_id:
            query = query.where(UsageSession.member_id == member_id)
        if open_only:
            query = query.where(UsageSession.ended_at.is_(None))
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = query.order_by(UsageSession.started_at.desc(), UsageSession.id)
        return self.session.scalars(page.limit(limit).offset(offset)).all(), total


class DenialRepository(_Repository):
    def add(self, denial: BadgeDenial) -> None:
        self.session.add(denial)

    def page(
        self, *, machine_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[Sequence[BadgeDenial], int]:
        query = select(BadgeDenial)
        if machine_id:
            query = query.where(BadgeDenial.machine_id == machine_id)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = query.order_by(BadgeDenial.at.desc(), BadgeDenial.id.desc())
        return self.session.scalars(page.limit(limit).offset(offset)).all(), total


class EventRepository(_Repository):
    def add(self, event: RawEvent) -> None:
        self.session.add(event)

    def exists(self, controller_id: str, outbox_id: str, seq: int) -> bool:
        query = select(RawEvent.id).where(
            RawEvent.controller_id == controller_id,
            RawEvent.outbox_id == outbox_id,
            RawEvent.seq == seq,
        )
        return self.session.scalar(query) is not None

    def event_id_exists(self, event_id: str) -> bool:
        return (
            self.session.scalar(select(RawEvent.id).where(RawEvent.event_id == event_id))
            is not None
        )

    def seqs_above(self, controller_id: str, outbox_id: str, seq: int) -> list[int]:
        query = select(RawEvent.seq).where(
            RawEvent.controller_id == controller_id,
            RawEvent.outbox_id == outbox_id,
            RawEvent.seq > seq,
        )
        return [s for s in self.session.scalars(query).all() if s is not None]

    def rejected_seqs(self, controller_id: str, outbox_id: str, low: int, high: int) -> list[int]:
        """Seqs in (low, high] of this stream that were stored as rejected."""
        query = select(RawEvent.seq).where(
            RawEvent.controller_id == controller_id,
            RawEvent.outbox_id == outbox_id,
            RawEvent.seq > low,
            RawEvent.seq <= high,
            RawEvent.status == "rejected",
        )
        return sorted(s for s in self.session.scalars(query).all() if s is not None)

    def count_by_status(self) -> dict[str, int]:
        query = select(RawEvent.status, func.count()).group_by(RawEvent.status)
        return {status: count for status, count in self.session.execute(query).all()}


class OutboxStreamRepository(_Repository):
    def get_or_create(self, controller_id: str, outbox_id: str) -> OutboxStream:
        stream = self.session.get(OutboxStream, (controller_id, outbox_id))
        if stream is None:
            stream = OutboxStream(controller_id=controller_id, outbox_id=outbox_id, acked_seq=0)
            self.session.add(stream)
        return stream
