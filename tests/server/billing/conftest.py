"""Billing fixtures: sessions written straight into the database, a treasurer's bus."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from server.adapters.orm import UsageSession
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.domain.billing.policy import BillingPolicy

POLICY = BillingPolicy(
    timezone="Europe/Paris", currency="EUR", credit_cap_percent=50, credit_cents_per_minute=10
)
TESS = Principal("tess", frozenset({Role.TREASURER}))
MONA = Principal("mona", frozenset({Role.MANAGER}))

AddSession = Callable[..., None]


@pytest.fixture
def add_session(lab: ServerRuntime) -> AddSession:
    """`add_session(id, member, machine, start, seconds, busy=0, ...)`: a finished session."""

    def add(
        session_id: str,
        member_id: str,
        machine_id: str,
        start: datetime,
        seconds: float,
        busy: float = 0.0,
        **extra: Any,
    ) -> None:
        with lab.new_uow() as uow:
            uow.sessions.add(
                UsageSession(
                    id=session_id,
                    machine_id=machine_id,
                    controller_id=machine_id,
                    member_id=member_id,
                    reported_member_id=member_id,
                    started_at=start,
                    ended_at=start + timedelta(seconds=seconds),
                    elapsed_seconds=seconds,
                    busy_seconds=busy,
                    **extra,
                )
            )
            uow.commit()

    return add
