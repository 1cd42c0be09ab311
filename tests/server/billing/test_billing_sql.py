"""The SQL pricing of a period gives exactly the pure rules' lines (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from server.adapters.orm import UsageSession
from server.bootstrap import ServerRuntime
from server.domain.billing.metering import whole_seconds
from server.domain.billing.rating import MeteredSession, rate_sessions
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.server.billing.conftest import POLICY, TESS, AddSession

MEMBERS = {"ada": "member", "nora": "student", "tom": "non-member"}


def _prices(lab: ServerRuntime) -> None:
    bus = lab.bus
    bus.handle(cmds.AddMachine("cnc", "CNC", "lab"))
    bus.handle(cmds.UpdateMember("nora", category="student"))
    bus.handle(cmds.UpdateMember("tom", category="non-member"))
    bus.handle(bc.AddTariff("cutting", "Cutting", ("laser",), actor=TESS))
    bus.handle(bc.AddTariff("milling", "Milling", ("cnc",), actor=TESS))
    for tariff, valid_from, pu, pb, minimum, step, free, category in (
        ("cutting", date(2026, 3, 1), 1200, 0, 100, 15, 0, None),
        ("cutting", date(2026, 3, 15), 1500, 600, 100, 6, 60, None),
        ("cutting", date(2026, 3, 1), 400, 0, 0, 1, 0, "student"),
        ("milling", date(2026, 3, 1), 0, 3000, 250, 1, 30, None),
        ("milling", date(2026, 3, 29), 700, 3300, 0, 30, 0, None),
    ):
        bus.handle(
            bc.AddRate(
                tariff, valid_from, POLICY, pu, pb, minimum, step, free, category, actor=TESS
            )
        )
    bus.handle(bc.SetCategoryMultiplier("non-member", 15_000, actor=TESS))


def test_billing_sql_prices_sessions_as_the_pure_rules_do(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _prices(lab)
    rnd = random.Random(8)
    base = datetime(2026, 2, 28, 20, tzinfo=UTC)
    for i in range(80):
        start = base + timedelta(seconds=rnd.randrange(0, 33 * 86400))
        seconds = rnd.choice([0.4, 59.9, 60.0, 61.2]) if i % 9 == 0 else rnd.uniform(0, 5 * 3600)
        add_session(
            f"s{i:03d}",
            rnd.choice(list(MEMBERS)),
            rnd.choice(["laser", "cnc"]),
            start,
            seconds,
            busy=rnd.uniform(0, seconds),
        )
    period_id = lab.bus.handle(bc.OpenPeriod(date(2026, 3, 1), POLICY, actor=TESS))
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    with lab.new_uow() as uow:
        period = uow.billing.period(period_id)
        assert period is not None
        stored = {line.session_id: line for line, _, _ in uow.billing.period_lines(period_id)}
        sessions = [
            MeteredSession(
                s.id,
                str(s.member_id),
                MEMBERS[str(s.member_id)],
                s.machine_id,
                s.started_at,
                s.ended_at or s.started_at,
                whole_seconds(s.elapsed_seconds),
                whole_seconds(s.busy_seconds),
            )
            for s in uow.session.query(UsageSession)
            if period.starts_at <= s.started_at < period.ends_at
        ]
        expected = rate_sessions(sessions, uow.billing.pricing(), POLICY.tz)
    assert len(stored) == len(expected) > 40
    for line in expected:
        got = stored[line.session_id]
        assert (
            got.billed_minutes,
            got.busy_billed_minutes,
            got.free_minutes,
            str(got.rate_id) if got.rate_id else None,
            got.multiplier_bp,
            got.amount_cents,
        ) == (
            line.billed_minutes,
            line.busy_billed_minutes,
            line.free_minutes,
            line.rate_id,
            line.multiplier_bp,
            line.amount_cents,
        ), line.session_id
