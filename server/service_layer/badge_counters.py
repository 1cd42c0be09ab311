"""Anti-cloning on the server: each badge's counters, clone detection (docs/security.md).

A genuine badge writes each counter value once (the controller writes counter + 1
before switching the relay on, and reports it in `session_started.badge_counter`). A
copy of the badge's sector, made at counter c, writes c + 1 again, as the original did
or will: the second event carrying a value the badge already wrote is a clone. Both
cards share the badge record, so the badge is blocked (left out of the next snapshot
of every machine) and marked cloned, and managers see it among the faults
(`GET /api/faults`, code `badge_cloned`) and in the audit log (`badge.cloned`).

A counter lower than the highest seen, but never seen, is not a clone: a controller
that was offline sends its older sessions late.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from protocol import Event, EventKind
from server.adapters.orm import Badge, BadgeCounterUse, Controller, ControllerFault
from server.service_layer.audit import record
from server.service_layer.guards import machines_of_member
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

logger = logging.getLogger(__name__)

CLONE_FAULT_CODE = "badge_cloned"


def apply_badge_event(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    """The anti-cloning side of one applied event: a session's counter, an enrollment
    that wrote the sector."""
    if event.kind is EventKind.SESSION_STARTED and "badge_counter" in event.data:
        check_counter(uow, controller, event, received_at)
    elif event.kind is EventKind.BADGE_ENROLLED and event.data.get("protected"):
        badge = uow.badges.by_uid(event.data["badge_uid"])
        if badge is not None:
            _mark_protected(uow, badge)


def check_counter(
    uow: SqlAlchemyUnitOfWork, controller: Controller, event: Event, received_at: datetime
) -> None:
    """Record the counter the session's badge wrote; a value written before is a clone."""
    uid, counter = event.data["badge_uid"], event.data["badge_counter"]
    badge = uow.badges.by_uid(uid)
    if badge is None:
        logger.warning("counter %s reported for unknown badge %s", counter, uid)
        return
    earlier = uow.badges.counter_use(badge.id, counter)
    if earlier is not None:
        _flag_clone(uow, badge, controller, event, earlier, received_at)
        return
    uow.badges.add_counter_use(
        BadgeCounterUse(
            badge_id=badge.id,
            counter=counter,
            event_id=event.event_id,
            machine_id=controller.machine_id,
            at=datetime.fromtimestamp(event.wall_time, UTC),
        )
    )
    _mark_protected(uow, badge)
    badge.counter_high = max(counter, badge.counter_high or 0)


def _mark_protected(uow: SqlAlchemyUnitOfWork, badge: Badge) -> None:
    """The badge carries a valid sector: from the next snapshots on, a read of it
    without one (a copy of the UID alone) is denied."""
    if badge.protection != "protected":
        badge.protection = "protected"
        uow.machines_to_publish |= machines_of_member(uow, badge.member_id)


def _flag_clone(
    uow: SqlAlchemyUnitOfWork,
    badge: Badge,
    controller: Controller,
    event: Event,
    earlier: BadgeCounterUse,
    received_at: datetime,
) -> None:
    counter = event.data["badge_counter"]
    now_at = datetime.fromtimestamp(event.wall_time, UTC)
    message = (
        # The badge's id, not its UID: an erased member's faults must not keep it.
        f"badge #{badge.id} of member {badge.member_id}: counter {counter} written twice"
        f" (on {earlier.machine_id} at {earlier.at:%Y-%m-%d %H:%M} UTC and on"
        f" {controller.machine_id} at {now_at:%Y-%m-%d %H:%M} UTC): two cards carry its"
        " sector; the badge is blocked"
    )
    logger.warning("clone detected: %s", message)
    uow.faults.add(
        ControllerFault(
            event_id=f"clone-{event.event_id}"[:64],
            machine_id=controller.machine_id,
            controller_id=controller.id,
            code=CLONE_FAULT_CODE,
            message=message[:500],
            at=now_at,
            received_at=received_at,
        )
    )
    if badge.cloned_at is not None:
        return  # already blocked: one more use of a copy, reported above
    before = {"status": badge.status, "protection": badge.protection}
    badge.status, badge.cloned_at = "blocked", received_at
    record(
        uow, actor=None, action="badge.cloned", object_type="badge", object_id=badge.id,
        before=before, after={"status": "blocked", "counter": counter,
                              "machines": sorted({earlier.machine_id, controller.machine_id})},
        at=received_at, system_actor=controller.id,
    )  # fmt: skip
    uow.machines_to_publish |= set(uow.machines.ids())
