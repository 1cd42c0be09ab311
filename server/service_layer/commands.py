"""Commands: what callers (API routes, MQTT ingest, CLI) ask the service layer to do.

Commands that change the lab carry `actor`: the person acting (None for the system,
the seed or a shell administrator), checked by the handler and written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol import Level, Mode
from server.adapters.orm import utcnow
from server.domain.access import Principal, Role
from server.domain.ingest_rules import Plausibility


@dataclass(frozen=True)
class OutgoingMessage:
    """An MQTT message to send once the transaction that produced it is committed."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class ConfigMessage:
    """A machine's signed config, sent after commit only while `version` is its latest."""

    machine_id: str
    version: int
    message: OutgoingMessage
    build_started: float | None = None  # time.perf_counter() when its build began


# -- from controllers -------------------------------------------------------------------


@dataclass(frozen=True)
class IngestEvent:
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)
    # The server's configured bounds on wall times and durations (Settings).
    limits: Plausibility = field(default_factory=Plausibility)


@dataclass(frozen=True)
class IngestBatch:
    """Controller events taken together: stored and applied in one transaction, in
    order, with one ack per outbox stream."""

    events: tuple[IngestEvent, ...]


@dataclass(frozen=True)
class RecordControllerStatus:
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RecordControllerStatuses:
    """Several status messages in one transaction (ingest takes them by the turn)."""

    statuses: tuple[RecordControllerStatus, ...]


# -- members, badges, categories ----------------------------------------------------------


@dataclass(frozen=True)
class AddMember:
    name: str
    email: str | None = None
    category: str = "member"
    member_id: str | None = None
    password: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UpdateMember:
    """Change the given fields (None = leave as is)."""

    member_id: str
    name: str | None = None
    email: str | None = None
    category: str | None = None
    active: bool | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetRoles:
    member_id: str
    roles: frozenset[Role]
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetPassword:
    member_id: str
    password: str
    current_password: str | None = None  # required when members change their own
    # The cookie token of the login making the change: it stays open, every other login
    # and every API token of the member end.
    keep_login: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AddCategory:
    category_id: str
    name: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RegisterBadge:
    member_id: str
    uid: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetBadgeStatus:
    badge_id: int
    status: str  # active | lost | blocked
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class StartEnrollment:
    """The next unknown badge tapped on the machine, within the window, goes to the member."""

    machine_id: str
    member_id: str
    window_s: int = 120
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- machines and controllers -------------------------------------------------------------


@dataclass(frozen=True)
class AddMachine:
    machine_id: str
    name: str
    site: str
    mode: Mode = Mode.TOGGLE
    idle_timeout_s: int = 0
    max_duration_s: int = 0
    heartbeat_interval_s: int = 60
    warning_s: int = 60
    card_removal_grace_s: int = 3
    supervisor_window_s: int = 30
    controller_id: str | None = None
    key_hex: str | None = None
    # A training type of the same id and name, covering this machine, is created unless
    # the machine joins existing types.
    training_type_ids: tuple[str, ...] = ()
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UpdateMachine:
    machine_id: str
    name: str | None = None
    mode: Mode | None = None
    idle_timeout_s: int | None = None
    max_duration_s: int | None = None
    heartbeat_interval_s: int | None = None
    warning_s: int | None = None
    card_removal_grace_s: int | None = None
    supervisor_window_s: int | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class LockMachine:
    """End the session running on the machine now (badges keep working afterwards)."""

    machine_id: str
    reason: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AnswerAuthRequest:
    """A controller asks whether a badge missing from its snapshot may start a session."""

    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SetOutOfService:
    machine_id: str
    out_of_service: bool
    reason: str | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class IssueControllerCredentials:
    """New MQTT password and snapshot key for a machine's controller (shown once)."""

    machine_id: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RevokeControllerCredentials:
    """Take away a machine controller's MQTT login and snapshot key (lost or stolen)."""

    machine_id: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- trainings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddTrainingType:
    training_type_id: str
    name: str
    machine_ids: tuple[str, ...]
    lapse_months: int | None = None
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UpdateTrainingType:
    training_type_id: str
    name: str | None = None
    machine_ids: tuple[str, ...] | None = None
    lapse_months: int | None = None
    clear_lapse: bool = False
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class GrantTraining:
    member_id: str
    training_type_id: str
    level: Level
    expires_at: datetime | None = None
    actor: Principal | None = None
    granted_by: str | None = None  # for system grants (seed, import, shell)
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RevokeTraining:
    member_id: str
    training_type_id: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class PublishConfigs:
    """Sign and publish the config of these machines (all when None).

    With `reissue_older_than_s`, a snapshot issued that long ago or more gets a new
    version and a fresh `issued_at` even when its content is unchanged.
    """

    machine_ids: frozenset[str] | None = None
    at: datetime = field(default_factory=utcnow)
    reissue_older_than_s: float | None = None


# -- accounts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    email: str
    password: str
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Logout:
    token: str


@dataclass(frozen=True)
class CreateApiToken:
    member_id: str
    name: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RevokeApiToken:
    member_id: str
    token_id: int
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- privacy and retention ------------------------------------------------------------------


@dataclass(frozen=True)
class EraseMember:
    """Pseudonymise a member (GDPR erasure), keeping the accounting records."""

    member_id: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class PurgeRawEvents:
    """Delete stored raw controller events received more than `older_than_days` ago."""

    older_than_days: int
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


# -- web accounts: one-time set-password links, problem reports ----------------------------


@dataclass(frozen=True)
class IssueAccountLink:
    """A one-time link for the member to set a password (an invitation, or a reset)."""

    member_id: str
    purpose: str = "invite"  # invite | reset
    valid_hours: int = 72
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RequestPasswordReset:
    """Someone forgot a password: a link for the member with this email, if there is one."""

    email: str
    valid_hours: int = 72
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class UseAccountLink:
    """Set the password through a one-time link (which then stops working)."""

    token: str
    password: str
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ReportProblem:
    machine_id: str
    text: str
    actor: Principal | None = None
    at: datetime = field(default_factory=utcnow)
