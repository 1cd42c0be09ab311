"""Periods, statements, credits and the database guards, through the message bus."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from protocol import Level
from server.adapters.orm import AuditEntry
from server.bootstrap import ServerRuntime
from server.domain.billing.ledger import verify
from server.domain.errors import ConflictError, DomainError, PermissionDeniedError
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.server.billing.conftest import MONA, POLICY, TESS, AddSession

MARCH = datetime(2026, 3, 10, 9, tzinfo=UTC)


def _laser_rate(lab: ServerRuntime) -> None:
    lab.bus.handle(bc.AddTariff("cutting", "Cutting", ("laser",), actor=TESS))
    lab.bus.handle(bc.AddRate("cutting", date(2026, 1, 1), POLICY, 1200, actor=TESS))


def _march(lab: ServerRuntime) -> int:
    period_id: int = lab.bus.handle(bc.OpenPeriod(date(2026, 3, 1), POLICY, actor=TESS))
    return period_id


def _statement(lab: ServerRuntime, member_id: str, period_id: int) -> int:
    with lab.new_uow() as uow:
        (statement,) = uow.billing.statements(
            period_id=period_id, member_id=member_id, kind="statement"
        )
        return statement.id


def test_billing_period_defaults_to_the_calendar_month(lab: ServerRuntime) -> None:
    period_id = _march(lab)
    with lab.new_uow() as uow:
        period = uow.billing.period(period_id)
        assert period is not None
        assert (period.ends_on, period.starts_at) == (
            date(2026, 4, 1),
            datetime(2026, 2, 28, 23, tzinfo=UTC),
        )


def test_billing_period_refuses_an_overlap(lab: ServerRuntime) -> None:
    _march(lab)
    with pytest.raises(ConflictError, match="overlaps"):
        lab.bus.handle(bc.OpenPeriod(date(2026, 3, 15), POLICY, actor=TESS))


def test_billing_only_the_treasurer_opens_a_period(lab: ServerRuntime) -> None:
    with pytest.raises(PermissionDeniedError):
        lab.bus.handle(bc.OpenPeriod(date(2026, 3, 1), POLICY, actor=MONA))


def test_billing_adjustment_is_kept_on_recompute_and_audited(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    period_id = _march(lab)
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    statement_id = _statement(lab, "ada", period_id)
    lab.bus.handle(bc.AdjustLine(statement_id, "s1", 600, "jammed", POLICY, actor=TESS))
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    with lab.new_uow() as uow:
        statement_id = _statement(lab, "ada", period_id)
        (line,) = uow.billing.lines(statement_id)
        assert (line.amount_cents, line.computed_cents, line.adjustment_reason) == (
            600,
            1200,
            "jammed",
        )
        audit = uow.session.query(AuditEntry).filter_by(action="billing.line.adjust").one()
        assert audit.actor_id == "tess" and "jammed" in (audit.after or "")


def test_billing_approval_numbers_without_gaps_and_spends_capped_credits(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    add_session("s2", "nora", "laser", MARCH, 1800)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 5000, "paid in advance", actor=TESS))
    period_id = _march(lab)
    assert lab.bus.handle(bc.ClosePeriod(period_id, POLICY, actor=TESS)) == 2
    with lab.new_uow() as uow:
        ada, nora = (
            uow.billing.statements(period_id=period_id, member_id=m)[0] for m in ("ada", "nora")
        )
        assert (ada.number, nora.number) == (1, 2)
        assert (ada.charges_cents, ada.credits_applied_cents, ada.net_cents) == (1200, 600, 600)
        chain = uow.billing.chain("ada")
        assert verify(chain) == [] and sum(e.amount_cents for e in chain) == 4400
        assert ada.ledger_hash == chain[-1].hash


def test_billing_approved_statement_is_refused_by_the_database(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 100, "paid", actor=TESS))
    period_id = _march(lab)
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    statement_id = _statement(lab, "ada", period_id)
    lab.bus.handle(bc.AdjustLine(statement_id, "s1", 900, "slow", POLICY, actor=TESS))
    lab.bus.handle(bc.ClosePeriod(period_id, POLICY, actor=TESS))
    statement_id = _statement(lab, "ada", period_id)
    for sql in (
        "UPDATE billing_statement SET net_cents = 1 WHERE id = :id",
        "DELETE FROM billing_statement WHERE id = :id",
        "UPDATE billing_line SET amount_cents = 1 WHERE statement_id = :id",
        "DELETE FROM billing_line WHERE statement_id = :id",
        "UPDATE billing_ledger_entry SET amount_cents = 1",
        "UPDATE billing_adjustment SET amount_cents = 1",
        "DELETE FROM billing_adjustment",
        "DELETE FROM billing_ledger_entry",
        "INSERT INTO billing_line (statement_id, session_id, machine_id, started_at, ended_at, "
        "metered_seconds, busy_seconds, billed_minutes, busy_billed_minutes, free_minutes, "
        "multiplier_bp, amount_cents, computed_cents, late) "
        "SELECT statement_id, 'x', machine_id, started_at, ended_at, 0, 0, 0, 0, 0, 1, 0, 0, "
        "late FROM billing_line WHERE statement_id = :id",
    ):
        with lab.new_uow() as uow, pytest.raises(DBAPIError):
            uow.session.execute(text(sql), {"id": statement_id} if ":id" in sql else {})


def test_billing_lines_need_their_statement_in_the_database(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    period_id = _march(lab)
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    statement_id = _statement(lab, "ada", period_id)
    copy = (
        "INSERT INTO billing_line (statement_id, session_id, machine_id, started_at, ended_at, "
        "metered_seconds, busy_seconds, billed_minutes, busy_billed_minutes, free_minutes, "
        "multiplier_bp, amount_cents, computed_cents, late) "
        "SELECT :other, session_id, machine_id, started_at, ended_at, 0, 0, 0, 0, 0, 1, 0, 0, "
        "late FROM billing_line WHERE statement_id = :id"
    )
    for sql, params in (
        (copy, {"id": statement_id, "other": statement_id + 1000}),
        ("DELETE FROM billing_statement WHERE id = :id", {"id": statement_id}),
    ):
        with lab.new_uow() as uow, pytest.raises(DBAPIError):
            uow.session.execute(text(sql), params)
            uow.session.flush()


def test_billing_approved_statement_refuses_adjustment_and_recompute(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    period_id = _march(lab)
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    statement_id = _statement(lab, "ada", period_id)
    lab.bus.handle(bc.ApproveStatement(statement_id, POLICY, actor=TESS))
    with pytest.raises(ConflictError, match="immutable"):
        lab.bus.handle(bc.AdjustLine(statement_id, "s1", 0, "free", POLICY, actor=TESS))
    with pytest.raises(ConflictError, match="immutable"):
        lab.bus.handle(bc.ApproveStatement(statement_id, POLICY, actor=TESS))
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))  # leaves it alone
    with lab.new_uow() as uow:
        assert [s.status for s in uow.billing.statements(period_id=period_id)] == ["approved"]


def test_billing_credit_note_references_the_original_and_is_numbered(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    add_session("s1", "ada", "laser", MARCH, 3600)
    period_id = _march(lab)
    lab.bus.handle(bc.ClosePeriod(period_id, POLICY, actor=TESS))
    original = _statement(lab, "ada", period_id)
    note_id = lab.bus.handle(bc.IssueCreditNote(original, 200, "fan broken", POLICY, actor=TESS))
    with pytest.raises(DomainError, match="left to correct"):
        lab.bus.handle(bc.IssueCreditNote(original, 1001, "again", POLICY, actor=TESS))
    with lab.new_uow() as uow:
        note = uow.billing.statement(note_id)
        assert note is not None
        assert (note.number, note.refers_to_id, note.net_cents) == (2, original, -200)


def test_billing_late_session_goes_to_the_next_open_period_marked(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _laser_rate(lab)
    march = _march(lab)
    lab.bus.handle(bc.ClosePeriod(march, POLICY, actor=TESS))
    add_session("late", "ada", "laser", MARCH, 3600)  # an offline controller catches up
    april = lab.bus.handle(bc.OpenPeriod(date(2026, 4, 1), POLICY, actor=TESS))
    lab.bus.handle(bc.ComputePeriod(april, POLICY, actor=TESS))
    with lab.new_uow() as uow:
        ((line, member, _),) = uow.billing.period_lines(april)
        assert (line.session_id, member, line.late, line.amount_cents) == (
            "late",
            "ada",
            True,
            1200,
        )


def test_billing_sweep_credits_once_per_source(lab: ServerRuntime, add_session: AddSession) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for type_id, source, unit in (
        ("supervising", "supervision", "hour"),
        ("maintenance", "maintenance", "hour"),
        ("teaching", "training", "item"),
    ):
        lab.bus.handle(
            bc.AddContributionType(type_id, type_id, unit, "money", 1000, source, actor=TESS, at=at)
        )
    add_session("sup", "nora", "laser", MARCH, 5400, supervisor_member_id="tom")
    add_session("fix", "mona", "laser", MARCH, 1800, maintenance_override=True)
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.AUTONOMOUS, actor=_tom(lab)))
    first = lab.bus.handle(bc.SweepCredits(POLICY, actor=TESS))
    again = lab.bus.handle(bc.SweepCredits(POLICY, actor=TESS))
    assert first == {"supervision": 1, "maintenance": 1, "training": 1, "expired": 0}
    assert again == {"supervision": 0, "maintenance": 0, "training": 0, "expired": 0}
    with lab.new_uow() as uow:
        balances = uow.billing.balances()
        assert balances == {"tom": 1500 + 1000, "mona": 500}
        assert uow.billing.balance("tom").minutes_given == 90


def _tom(lab: ServerRuntime) -> object:
    from server.service_layer.accounts import principal_of

    with lab.new_uow() as uow:
        member = uow.members.get("tom")
        assert member is not None
        return principal_of(uow, member)


def test_billing_claim_is_credited_when_a_manager_approves(lab: ServerRuntime) -> None:
    lab.bus.handle(
        bc.AddContributionType("docs", "Documentation", "item", "minutes", 30, actor=TESS)
    )
    claim_id = lab.bus.handle(
        bc.SubmitClaim("ada", "docs", 2, "laser recipe", "https://wiki.example/laser")
    )
    with pytest.raises(PermissionDeniedError):
        lab.bus.handle(bc.DecideClaim(claim_id, True, "ok", POLICY, actor=TESS))
    lab.bus.handle(bc.DecideClaim(claim_id, True, "useful recipe", POLICY, actor=MONA))
    with pytest.raises(ConflictError, match="already approved"):
        lab.bus.handle(bc.DecideClaim(claim_id, False, "no", POLICY, actor=MONA))
    with lab.new_uow() as uow:
        assert uow.billing.balances() == {"ada": 2 * 30 * 10}


def test_billing_credits_expire_after_the_policy_months(lab: ServerRuntime) -> None:
    from dataclasses import replace

    lab.bus.handle(bc.AdjustLedger("ada", "adjust", 700, "welcome", actor=TESS))
    lab.bus.handle(bc.AddContributionType("docs", "Docs", "item", "money", 500, actor=TESS))
    claim = lab.bus.handle(bc.SubmitClaim("ada", "docs", 1, "recipe"))
    lab.bus.handle(bc.DecideClaim(claim, True, "ok", POLICY, actor=MONA))
    later = datetime.now(UTC) + timedelta(days=200)
    policy = replace(POLICY, credit_expiry_months=6)
    assert lab.bus.handle(bc.SweepCredits(policy, actor=TESS, at=later))["expired"] == 1
    with lab.new_uow() as uow:
        assert uow.billing.balances() == {"ada": 700}  # the adjustment does not expire
