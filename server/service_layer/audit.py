"""Writing the append-only audit log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from server.adapters.orm import AuditEntry
from server.domain.access import Principal
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


def record(
    uow: SqlAlchemyUnitOfWork,
    *,
    actor: Principal | None,
    action: str,
    object_type: str,
    object_id: str | int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
    system_actor: str | None = None,
) -> None:
    """Append one entry; committed with the change it describes.

    Personal data (names, emails) is not copied into the log, only whether it changed,
    so that erasing a member never needs the append-only log to be rewritten.
    """
    uow.audit.add(
        AuditEntry(
            at=at,
            actor_id=actor.member_id if actor else system_actor,
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            before=_dump(before),
            after=_dump(after),
        )
    )


def _dump(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)
