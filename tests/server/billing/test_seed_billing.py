"""The demo's billing seed: a treasurer can close last month in the demo."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from server.adapters.migrations import upgrade
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.billing.ledger import verify
from server.seed import seed_demo_lab
from server.seed_billing import seed_demo_billing
from server.service_layer import billing_commands as bc
from server.service_layer import billing_views as views
from tests.server.billing.conftest import POLICY


def test_seed_billing_lets_a_treasurer_close_last_month(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"  # SQLite only: the demo's database
    upgrade(url)
    runtime = ServerRuntime(Settings(database_url=url, site="lab"), mqtt_enabled=False)
    seed_demo_lab(runtime.bus, site="lab")
    period = seed_demo_billing(runtime.bus, site="lab", policy=POLICY, today=date(2026, 11, 22))
    approved = runtime.bus.handle(bc.ClosePeriod(period, POLICY))
    with runtime.new_uow() as uow:
        statements = uow.billing.statements(period_id=period)
        lines = uow.billing.period_lines(period)
        chains = uow.billing.chains()
        journal = views.period_journal(uow, period, POLICY)
    assert approved == len(statements) >= 6
    assert len(lines) >= 30 and all(s.status == "approved" for s in statements)
    assert sum(s.charges_cents for s in statements) > 0
    assert {s.number for s in statements} == set(range(1, len(statements) + 1))
    assert any(e.source_type == "supervised_session" for c in chains.values() for e in c)
    assert all(verify(chain) == [] for chain in chains.values())
    assert sum(x.debit_cents - x.credit_cents for x in journal) == 0
    runtime.engine.dispose()
