"""A recompute keeps the drafts it already priced while no input of the pricing changed
(PostgreSQL: the inputs' fingerprint), and prices again as soon as one did."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from server.bootstrap import ServerRuntime
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.server.billing.conftest import POLICY, TESS, AddSession

MARCH = datetime(2026, 3, 10, 9, tzinfo=UTC)


@pytest.fixture
def march(lab: ServerRuntime, add_session: AddSession) -> int:
    """A laser at 12.00 an hour, an hour of ada's in March, March computed."""
    lab.bus.handle(bc.AddTariff("cutting", "Cutting", ("laser",), actor=TESS))
    lab.bus.handle(bc.AddRate("cutting", date(2026, 1, 1), POLICY, 1200, actor=TESS))
    add_session("s1", "ada", "laser", MARCH, 3600)
    period_id: int = lab.bus.handle(bc.OpenPeriod(date(2026, 3, 1), POLICY, actor=TESS))
    lab.bus.handle(bc.ComputePeriod(period_id, POLICY, actor=TESS))
    return period_id


def _drafts(lab: ServerRuntime, period_id: int) -> list[tuple[int, str, int]]:
    with lab.new_uow() as uow:
        return [
            (s.id, s.member_id, s.charges_cents)
            for s in uow.billing.statements(period_id=period_id, kind="statement")
        ]


def _postgres_only(lab: ServerRuntime) -> None:
    if lab.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no SQL hash function: its drafts are always priced again")


def test_billing_recompute_keeps_the_drafts_when_nothing_changed(
    lab: ServerRuntime, march: int
) -> None:
    _postgres_only(lab)
    before = _drafts(lab, march)
    lab.bus.handle(bc.ComputePeriod(march, POLICY, actor=TESS))
    assert _drafts(lab, march) == before


def test_billing_close_approves_the_drafts_compute_priced(lab: ServerRuntime, march: int) -> None:
    _postgres_only(lab)
    ((draft_id, _, _),) = _drafts(lab, march)
    lab.bus.handle(bc.ClosePeriod(march, POLICY, actor=TESS))
    with lab.new_uow() as uow:
        statement = uow.billing.statement(draft_id)
        assert statement is not None
        assert (statement.status, statement.number, statement.charges_cents) == (
            "approved",
            1,
            1200,
        )


Change = Callable[[ServerRuntime, AddSession], None]
CHANGES: dict[str, tuple[Change, list[tuple[str, int]]]] = {
    "a new session": (
        lambda lab, add: add("s2", "nora", "laser", MARCH, 1800),
        [("ada", 1200), ("nora", 600)],
    ),
    "a session ended longer": (
        lambda lab, add: _set_elapsed(lab, "s1", 7200),
        [("ada", 2400)],
    ),
    "a new rate": (
        lambda lab, add: lab.bus.handle(
            bc.AddRate("cutting", date(2026, 3, 1), POLICY, 600, actor=TESS)
        ),
        [("ada", 600)],
    ),
    "a category multiplier": (
        lambda lab, add: lab.bus.handle(bc.SetCategoryMultiplier("member", 5000, actor=TESS)),
        [("ada", 600)],
    ),
    "the member's category": (
        lambda lab, add: _student(lab),
        [("ada", 600)],
    ),
    "the machine's tariff": (
        lambda lab, add: lab.bus.handle(bc.UpdateTariff("cutting", None, (), actor=TESS)),
        [("ada", 0)],
    ),
}


def _set_elapsed(lab: ServerRuntime, session_id: str, seconds: float) -> None:
    with lab.new_uow() as uow:
        row = uow.sessions.get(session_id)
        assert row is not None
        row.elapsed_seconds = seconds
        uow.commit()


def _student(lab: ServerRuntime) -> None:
    lab.bus.handle(bc.SetCategoryMultiplier("student", 5000, actor=TESS))
    lab.bus.handle(cmds.UpdateMember("ada", category="student"))


@pytest.mark.parametrize("change", list(CHANGES))
def test_billing_recompute_prices_again_after_a_change(
    lab: ServerRuntime, add_session: AddSession, march: int, change: str
) -> None:
    apply, expected = CHANGES[change]
    apply(lab, add_session)
    lab.bus.handle(bc.ComputePeriod(march, POLICY, actor=TESS))
    assert [(member, cents) for _, member, cents in _drafts(lab, march)] == expected
