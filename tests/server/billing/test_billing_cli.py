"""`fablab billing …` and `fablab ledger verify` on a real database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from server.adapters.orm import UsageSession
from server.bootstrap import ServerRuntime
from server.cli import app
from server.config import Settings
from server.service_layer import commands as cmds


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    from server.adapters.migrations import upgrade

    url = f"sqlite:///{tmp_path}/cli.sqlite3"  # type: ignore[str-bytes-safe]
    upgrade(url)
    return url


def _run(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def _laser_lab(sqlite_url: str) -> CliRunner:
    """Ada's one-hour laser session on 8 Oct 2026, the cutting tariff at 12.00/h."""
    runtime = ServerRuntime(Settings(database_url=sqlite_url), mqtt_enabled=False)
    runtime.bus.handle(cmds.AddMachine("laser", "Laser", "lab"))
    runtime.bus.handle(cmds.AddMember("Ada", member_id="ada"))
    with runtime.new_uow() as uow:
        start = datetime(2026, 10, 8, 12, tzinfo=UTC)
        uow.sessions.add(
            UsageSession(
                id="s1",
                machine_id="laser",
                controller_id="laser",
                member_id="ada",
                reported_member_id="ada",
                started_at=start,
                ended_at=start,
                elapsed_seconds=3600,
            )
        )
        uow.commit()
    runtime.engine.dispose()
    runner = CliRunner(env={"FABLAB_DATABASE_URL": sqlite_url})
    _run(runner, "billing", "tariff-add", "cutting", "Laser cutting", "--machine", "laser")
    _run(
        runner,
        "billing",
        "rate-add",
        "cutting",
        "2026-10-01",
        "--unlocked",
        "12.00",
        "--minimum",
        "2.00",
        "--rounding",
        "15",
    )
    return runner


def test_billing_cli_closes_a_period_and_exports_fec(sqlite_url: str) -> None:
    runner = _laser_lab(sqlite_url)
    _run(runner, "billing", "multiplier", "student", "0.5")
    _run(
        runner,
        "billing",
        "contribution-type-add",
        "supervising",
        "Supervising a session",
        "--unit",
        "hour",
        "--kind",
        "money",
        "--value",
        "10.00",
        "--automatic",
        "supervision",
    )
    _run(runner, "billing", "period-open", "2026-10-01")
    assert "1 draft statements" in _run(runner, "billing", "period-compute", "1")
    assert "\tada\t12.00\t0.00\t12.00 EUR" in _run(runner, "billing", "statements", "1")
    assert "1 statements approved" in _run(runner, "billing", "period-close", "1")
    fec = _run(runner, "billing", "export", "1", "--format", "fec").splitlines()
    assert fec[0].startswith("JournalCode|JournalLib|EcritureNum") and len(fec) == 3
    _run(runner, "billing", "rate-add", "nope", "2026-10-01", code=1)


def test_ledger_verify_detects_a_tampered_entry(sqlite_url: str) -> None:
    runtime = ServerRuntime(Settings(database_url=sqlite_url), mqtt_enabled=False)
    runtime.bus.handle(cmds.AddMember("Ada", member_id="ada"))
    runtime.engine.dispose()
    runner = CliRunner(env={"FABLAB_DATABASE_URL": sqlite_url})
    _run(runner, "billing", "topup", "ada", "20.00", "paid at the desk")
    _run(runner, "billing", "topup", "ada", "5.00", "paid again")
    assert "ledger intact: 1 members, 2 entries" in _run(runner, "ledger", "verify")
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:  # someone with database access bypasses the guard
        conn.execute(text("DROP TRIGGER billing_ledger_entry_no_update"))
        conn.execute(text("UPDATE billing_ledger_entry SET amount_cents = 9000 WHERE seq = 1"))
    engine.dispose()
    output = _run(runner, "ledger", "verify", code=1)
    assert "ada #1: content does not match its hash (altered)" in output


def test_billing_cli_adjusts_a_line_and_prints_the_statement(sqlite_url: str) -> None:
    runner = _laser_lab(sqlite_url)
    _run(runner, "billing", "period-open", "2026-10-01")
    _run(runner, "billing", "period-compute", "1")
    assert "s1\tlaser\t2026-10-08 14:00\t60 min\t12.00" in _run(runner, "billing", "statement", "1")
    _run(runner, "billing", "adjust-line", "1", "s1", "8.00", "first session, goodwill")
    _run(runner, "billing", "period-compute", "1")
    statement = _run(runner, "billing", "statement", "1")
    assert "8.00\tadjusted: first session, goodwill" in statement
    assert "net due 8.00 EUR" in statement
    assert "machine\tlaser\t1\t8.00" in _run(runner, "billing", "totals", "1")
    _run(runner, "billing", "adjust-line", "1", "s9", "1.00", "no such line", code=1)


def test_billing_cli_claim_decided_credits_the_member(sqlite_url: str) -> None:
    runner = _laser_lab(sqlite_url)
    _run(runner, "billing", "contribution-type-add", "recipe", "A recipe published",
         "--unit", "item", "--kind", "money", "--value", "5.00")  # fmt: skip
    _run(runner, "billing", "claim-submit", "ada", "recipe", "2", "Two laser recipes",
         "--link", "https://wiki.example/laser")  # fmt: skip
    assert "1\tpending\tada\trecipe\t2\tTwo laser recipes" in _run(
        runner, "billing", "claims", "--status", "pending"
    )
    _run(runner, "billing", "claim-decide", "1", "maybe", "unsure", code=1)
    _run(runner, "billing", "claim-decide", "1", "approve", "thank you")
    _run(runner, "billing", "claim-decide", "1", "reject", "changed my mind", code=1)
    assert "balance 10.00" in _run(runner, "billing", "ledger", "ada")
    _run(runner, "billing", "credits-adjust", "ada", "--", "-3.00", "counted one twice")
    assert "credits 7.00" in _run(runner, "billing", "balance", "--member", "ada")
    assert "machine hours used 1.00" in _run(runner, "billing", "balance")
