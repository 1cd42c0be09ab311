"""`fablab billing prepaid`, `topup` and `prepaid-balance` from a shell."""

from __future__ import annotations

from typer.testing import CliRunner

from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from tests.server.billing.test_billing_cli import _run, sqlite_url  # noqa: F401 - the fixture


def test_prepaid_cli_sets_a_category_and_shows_the_balance(
    sqlite_url: str,  # noqa: F811 - the fixture
) -> None:
    runtime = ServerRuntime(Settings(database_url=sqlite_url), mqtt_enabled=False)
    runtime.bus.handle(cmds.AddMember("Ada", member_id="ada"))
    runtime.engine.dispose()
    runner = CliRunner(env={"FABLAB_DATABASE_URL": sqlite_url})
    assert "not in a prepaid category" in _run(runner, "billing", "prepaid-balance", "ada")
    out = _run(runner, "billing", "prepaid", "member", "--threshold", "5.00", "--overdraft", "2")
    assert "member: prepaid, threshold 5.00, overdraft 2" in out
    assert "ada: 0.00 (below the threshold)" in _run(runner, "billing", "prepaid-balance", "ada")
    _run(runner, "billing", "topup", "ada", "7.50", "paid at the desk")
    assert "ada: 7.50 (may start)" in _run(runner, "billing", "prepaid-balance", "ada")
    _run(runner, "billing", "prepaid", "member", "--threshold", "-1", code=1)
