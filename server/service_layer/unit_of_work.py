"""The unit of work: one transaction and the repositories that share it."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from server.adapters import repository as repo
from server.adapters.billing_repository import BillingRepository
from server.domain.billing.policy import BillingPolicy
from server.service_layer.commands import ConfigMessage, OutgoingMessage
from server.service_layer.ratelimit import AttemptLimiter

if TYPE_CHECKING:
    from server.service_layer.access_index import AccessIndex


class SqlAlchemyUnitOfWork:
    """`with uow:` opens a session; nothing is kept unless `commit()` is called.

    Handlers add to `machines_to_publish` the machines whose signed config must be
    republished once the transaction is committed, to `outgoing` the MQTT messages
    (acks) to send after their commit, and to `configs` the signed configs whose version
    they committed (sent in order per machine, see `MessageBus`). `limiter` counts failed
    attempts of guarded actions (password checks, email changes) across units of work:
    pass the process's. `billing_policy` is the lab's billing settings, for the handlers
    that price without a billing command (a prepaid member's allowance in a snapshot).
    `plain_badges_allowed` is the site's rule for badges without the anti-cloning sector,
    carried in every snapshot.
    `access_index`, the process's, lets online checks answer from memory.
    `memo` keeps, for this transaction only, reads that its own
    writes cannot change (see `memo_read`).
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        limiter: AttemptLimiter | None = None,
        billing_policy: BillingPolicy | None = None,
        *,
        plain_badges_allowed: bool = True,
        access_index: AccessIndex | None = None,
    ) -> None:
        self._session_factory = session_factory
        self.limiter = limiter if limiter is not None else AttemptLimiter()
        self.billing_policy = billing_policy or BillingPolicy()
        self.plain_badges_allowed = plain_badges_allowed
        self.access_index = access_index
        self.machines_to_publish: set[str] = set()
        self.outgoing: list[OutgoingMessage] = []
        self.configs: list[ConfigMessage] = []
        self.memo: dict[Hashable, Any] = {}

    def __enter__(self) -> SqlAlchemyUnitOfWork:
        self.session = self._session_factory()
        self.members = repo.MemberRepository(self.session)
        self.badges = repo.BadgeRepository(self.session)
        self.machines = repo.MachineRepository(self.session)
        self.controllers = repo.ControllerRepository(self.session)
        self.trainings = repo.TrainingRepository(self.session)
        self.training_types = repo.TrainingTypeRepository(self.session)
        self.categories = repo.CategoryRepository(self.session)
        self.audit = repo.AuditRepository(self.session)
        self.credentials = repo.CredentialRepository(self.session)
        self.enrollments = repo.EnrollmentRepository(self.session)
        self.commands = repo.ControllerCommandRepository(self.session)
        self.sessions = repo.UsageSessionRepository(self.session)
        self.denials = repo.DenialRepository(self.session)
        self.events = repo.EventRepository(self.session)
        self.streams = repo.OutboxStreamRepository(self.session)
        self.faults = repo.FaultRepository(self.session)
        self.account_links = repo.AccountLinkRepository(self.session)
        self.problem_reports = repo.ProblemReportRepository(self.session)
        self.billing = BillingRepository(self.session)
        self.machines_to_publish = set()
        self.outgoing = []
        self.configs = []
        self.memo = {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back what was not committed; objects stay readable, detached.
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
        self.memo.clear()

    def memo_read(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """`read()` once per transaction for this key (a batch of events asks the same
        questions many times). Only for reads that this transaction's writes cannot
        change, or whose key the writer drops from `memo`."""
        if key not in self.memo:
            self.memo[key] = read()
        return self.memo[key]

    def flush(self) -> None:
        self.session.flush()


UnitOfWorkFactory = Callable[[], SqlAlchemyUnitOfWork]
