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
    false,
    text,
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
    category: Mapped[str] = mapped_column(ForeignKey("member_category.id"), default="member")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    badges: Mapped[list[Badge]] = relationship(back_populates="member")
    roles: Mapped[list[MemberRole]] = relationship(
        back_populates="member", cascade="all, delete-orphan", lazy="selectin"
    )


class MemberCategory(Base):
    """A pricing/membership category (member, student, non-member, partner…)."""

    __tablename__ = "member_category"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class MemberRole(Base):
    """A lab-wide role: manager, treasurer or admin (trainer is per training type)."""

    __tablename__ = "member_role"

    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)

    member: Mapped[Member] = relationship(back_populates="roles")


class LoginSession(Base):
    """A browser login: the cookie carries the token, the table only its hash."""

    __tablename__ = "login_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A personal bearer token for integrations; only its hash is stored."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Badge(Base):
    __tablename__ = "badge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    # active | lost | blocked | erased
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Anti-cloning (docs/security.md): plain (UID only) | protected (the card carries the
    # sector with a counter and its MAC; read without it, it is denied).
    protection: Mapped[str] = mapped_column(String(20), default="plain", server_default="plain")
    # The highest anti-cloning counter its sessions reported.
    counter_high: Mapped[int | None] = mapped_column(BigInteger)
    # When a counter was reported twice: two cards with this badge's sector (blocked).
    cloned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    member: Mapped[Member] = relationship(back_populates="badges")


class BadgeCounterUse(Base):
    """An anti-cloning counter a badge wrote on a granted tap: each value is written
    once by a genuine card, so a second event with it means a copy."""

    __tablename__ = "badge_counter_use"

    badge_id: Mapped[int] = mapped_column(ForeignKey("badge.id"), primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    machine_id: Mapped[str] = mapped_column(String(63))
    at: Mapped[datetime] = mapped_column(UtcDateTime)  # the controller's clock


class Machine(Base):
    __tablename__ = "machine"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # slug, as in topics
    site: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20), default="toggle")
    idle_timeout_s: Mapped[int] = mapped_column(Integer, default=0)
    max_duration_s: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_interval_s: Mapped[int] = mapped_column(Integer, default=60)
    # Buzzer warning this long before an idle-timeout or max-duration stop.
    warning_s: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    # Hold mode: how long the badge may leave the reader before the session ends.
    card_removal_grace_s: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    # Supervised members: time for a supervisor's badge to confirm the session.
    supervisor_window_s: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
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
    mqtt_username: Mapped[str | None] = mapped_column(String(100), unique=True)
    # Mosquitto's own PBKDF2-SHA512 format, so a password file can be exported as is.
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(300))
    credentials_issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    machine: Mapped[Machine] = relationship(back_populates="controller")


class TrainingType(Base):
    """A training that covers one or more machines and lapses after disuse."""

    __tablename__ = "training_type"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Lapses after this many months without a session on any of its machines.
    lapse_months: Mapped[int | None] = mapped_column(Integer)

    machines: Mapped[list[Machine]] = relationship(
        secondary="training_type_machine", lazy="selectin", order_by="Machine.id"
    )


class TrainingTypeMachine(Base):
    __tablename__ = "training_type_machine"

    training_type_id: Mapped[str] = mapped_column(ForeignKey("training_type.id"), primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), primary_key=True)


class Training(Base):
    """A member's training of a type at a level; revoked rows are kept."""

    __tablename__ = "training"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    training_type_id: Mapped[str] = mapped_column(ForeignKey("training_type.id"), index=True)
    level: Mapped[str] = mapped_column(String(20))
    granted_by: Mapped[str | None] = mapped_column(String(200))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class AuditEntry(Base):
    """Append-only record of a change: who, when, what, before and after."""

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(100))
    before: Mapped[str | None] = mapped_column(Text)  # JSON
    after: Mapped[str | None] = mapped_column(Text)  # JSON

    __table_args__ = (Index("ix_audit_entry_object", "object_type", "object_id"),)


class Enrollment(Base):
    """A manager waits for the next unknown badge tapped on a machine to give it to a member."""

    __tablename__ = "enrollment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"))
    requested_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    badge_uid: Mapped[str | None] = mapped_column(String(40))
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


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
    # A manager switched the out-of-service machine on for maintenance.
    maintenance_override: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # Who confirmed a supervised member's session.
    supervisor_member_id: Mapped[str | None] = mapped_column(String(64))
    # Granted by the server's online answer rather than from the snapshot.
    decided_online: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The controller's monotonic clock at session_started (same boot_id): measures the
    # session's real span even when its wall clock was stepped.
    started_mono_time: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_usage_session_open", "machine_id", "ended_at"),)


class ControllerCommand(Base):
    """A signed command sent to a controller, kept until it is applied or expires.

    The exact payload is kept so that a resend carries the same command id, which the
    controller ignores once it has applied it.
    """

    __tablename__ = "controller_command"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the command id
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    controller_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(String(500))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[str] = mapped_column(Text)
    sent_count: Mapped[int] = mapped_column(Integer, default=1)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    applied_message: Mapped[str | None] = mapped_column(String(500))


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
    seq: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str | None] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    # accepted | rejected | duplicate (an event already committed from the same controller,
    # re-sent on a new stream: holds its seq, applied once) | conflict (see conflict_seq)
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(String(500))
    wall_time: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # The event id the payload carries, whenever readable (event_id is only set on the
    # row that applied or rejected it, being unique).
    payload_event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # A conflict: the seq this event claimed, which the stream already holds under
    # another event id (`seq` stays empty: it belongs to that other event).
    conflict_seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("controller_id", "outbox_id", "seq"),
        # Every ack reads its stream's conflicts: a few rows, found without scanning the
        # stream's events (a partial index holds the conflicts only).
        Index(
            "ix_raw_event_conflict",
            "controller_id",
            "outbox_id",
            "conflict_seq",
            postgresql_where=text("conflict_seq IS NOT NULL"),
            sqlite_where=text("conflict_seq IS NOT NULL"),
        ),
    )


class OutboxStream(Base):
    """How far one controller outbox is committed (the cumulative ack)."""

    __tablename__ = "outbox_stream"

    controller_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    outbox_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ControllerFault(Base):
    """A fault a controller reported (reader failure, outbox full, corrupt file…)."""

    __tablename__ = "controller_fault"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    controller_id: Mapped[str] = mapped_column(String(63))
    code: Mapped[str] = mapped_column(String(64), index=True)
    message: Mapped[str] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)  # the controller's clock
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AccountLink(Base):
    """A one-time link to set a password (invitation or forgotten password).

    Only the hash of the link's secret is stored; it works once, until it expires.
    """

    __tablename__ = "account_link"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("member.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))  # invite | reset
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProblemReport(Base):
    """A member reported a problem with a machine from the web (kept for the managers)."""

    __tablename__ = "problem_report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machine.id"), index=True)
    member_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


# Billing tables share this metadata (Alembic and create_all see them).
from server.adapters import orm_billing  # noqa: E402, F401
