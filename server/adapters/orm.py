"""SQLAlchemy tables: the persistent state of the lab."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Member(Base):
    __tablename__ = "member"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    category: Mapped[str] = mapped_column(String(40), default="member")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    badges: Mapped[list[Badge]] = relationship(back_populates="member")


class Badge(Base):
    __tablename__ = "badge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | lost | blocked
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    member: Mapped[Member] = relationship(back_populates="badges")


class Machine(Base):
    __tablename__ = "machine"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # slug, as in topics
    site: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20), default="toggle")
    idle_timeout_s: Mapped[int] = mapped_column(Integer, default=0)
    max_duration_s: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_interval_s: Mapped[int] = mapped_column(Integer, default=60)
    out_of_service: Mapped[bool] = mapped_column(Boolean, default=False)
    out_of_service_reason: Mapped[str | None] = mapped_column(String(500))
    snapshot_version: Mapped[int] = mapped_column(BigInteger, default=0)
    snapshot_digest: Mapped[str | None] = mapped_column(String(64))
    snapshot_issued_at: Mapped[int] = mapped_column(BigInteger, default=0)

    controller: Mapped[Controller | None] = relationship(back_populates="machine")


class Controller(Base):
    __tablename__ = "controller"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), unique=True)
    key_hex: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(20), default="unknown")  # online|offline|unknown
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    machine: Mapped[Machine] = relationship(back_populates="controller")


class Training(Base):
    """A member's permission on a machine at a level; revoked rows are kept."""

    __tablename__ = "training"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    level: Mapped[str] = mapped_column(String(20))
    granted_by: Mapped[str | None] = mapped_column(String(200))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UsageSession(Base):
    """One session on a machine, as reported by its controller."""

    __tablename__ = "usage_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # controller's session id
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    controller_id: Mapped[str] = mapped_column(String(63))
    member_id: Mapped[str | None] = mapped_column(ForeignKey("member.id"), index=True)
    reported_member_id: Mapped[str] = mapped_column(String(64))
    badge_uid: Mapped[str | None] = mapped_column(String(40))
    level: Mapped[str | None] = mapped_column(String(20))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy: Mapped[bool] = mapped_column(Boolean, default=False)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    snapshot_version: Mapped[int | None] = mapped_column(BigInteger)
    # Decided by the controller from a snapshot older than the one the server had issued.
    stale_snapshot: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_usage_session_open", "machine_id", "ended_at"),)


class BadgeDenial(Base):
    """A refused tap: unknown badge, untrained member, machine out of service…"""

    __tablename__ = "badge_denial"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    badge_uid: Mapped[str] = mapped_column(String(40))
    member_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class RawEvent(Base):
    """Every event payload received, accepted or rejected: nothing is lost."""

    __tablename__ = "raw_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    controller_id: Mapped[str | None] = mapped_column(String(63))
    outbox_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str | None] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # accepted | rejected
    error: Mapped[str | None] = mapped_column(String(500))
    wall_time: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("controller_id", "outbox_id", "seq"),)


class OutboxStream(Base):
    """How far one controller outbox is committed (the cumulative ack)."""

    __tablename__ = "outbox_stream"

    controller_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    outbox_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    acked_seq: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
