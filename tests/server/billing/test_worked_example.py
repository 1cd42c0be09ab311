"""The worked example of docs/billing.md, computed by hand there, checked here.

Three members, two machines, one rate change (15 October), one DST night (24-25
October), one automatic contribution (a supervised session) and one claimed (a recipe),
one credit note; the statements and the FEC export must be exactly those of the doc.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.domain.billing.accounting import FEC_COLUMNS
from server.domain.billing.ledger import verify
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.server.billing.conftest import MONA, POLICY, TESS, AddSession
from tests.server.conftest import Headers

DOC = Path(__file__).resolve().parents[3] / "docs" / "billing.md"
EXAMPLE = replace(POLICY, volunteer_cents_per_hour=1500)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


SESSIONS = (  # id, member, machine, start (UTC), seconds, busy seconds, supervisor
    ("s1", "ada", "laser", _utc(2026, 10, 8, 12), 4200, 0, None),
    ("s2", "ada", "laser", _utc(2026, 10, 16, 8), 1200, 0, None),
    ("s3", "ada", "cnc", _utc(2026, 10, 24, 21, 30), 14400, 7200, None),
    ("s4", "linus", "laser", _utc(2026, 10, 13, 16), 3000, 0, "ada"),
    ("s5", "linus", "cnc", _utc(2026, 10, 21, 7), 2700, 1800, None),
    ("s6", "nora", "laser", _utc(2026, 10, 19, 18), 300, 0, None),
    ("s7", "nora", "cnc", _utc(2026, 10, 29, 13), 7200, 3600, None),
)


def build_worked_example(lab: ServerRuntime, add_session: AddSession) -> int:
    """Prices, people, sessions, contributions; closes October; returns its period id."""
    bus, start = lab.bus, _utc(2026, 10, 1)
    bus.handle(cmds.AddMachine("cnc", "CNC router", "lab"))
    bus.handle(cmds.AddMember("Linus Torvalds", category="student", member_id="linus"))
    bus.handle(cmds.UpdateMember("nora", category="non-member"))
    bus.handle(bc.AddTariff("cutting", "Laser cutting", ("laser",), actor=TESS, at=start))
    bus.handle(bc.AddTariff("milling", "CNC milling", ("cnc",), actor=TESS, at=start))
    for tariff, valid_from, pu, pb, minimum, step, free in (
        ("cutting", date(2026, 10, 1), 1200, 0, 200, 15, 0),
        ("cutting", date(2026, 10, 15), 1500, 0, 600, 15, 0),
        ("milling", date(2026, 10, 1), 600, 2400, 0, 6, 60),
    ):
        bus.handle(
            bc.AddRate(
                tariff, valid_from, EXAMPLE, pu, pb, minimum, step, free, actor=TESS, at=start
            )
        )
    bus.handle(bc.SetCategoryMultiplier("student", 5_000, actor=TESS, at=start))
    bus.handle(bc.SetCategoryMultiplier("non-member", 15_000, actor=TESS, at=start))
    bus.handle(
        bc.AddContributionType(
            "supervising",
            "Supervising a session",
            "hour",
            "money",
            1000,
            "supervision",
            actor=TESS,
            at=start,
        )
    )
    bus.handle(
        bc.AddContributionType(
            "recipe", "Recipe published", "item", "minutes", 30, actor=TESS, at=start
        )
    )
    for sid, member, machine, begin, seconds, busy, supervisor in SESSIONS:
        add_session(sid, member, machine, begin, seconds, busy, supervisor_member_id=supervisor)
    claim = bus.handle(
        bc.SubmitClaim(
            "linus",
            "recipe",
            1,
            "Plywood box joints on the laser",
            "https://wiki.example/recipes/box-joints",
            at=_utc(2026, 10, 28, 10),
        )
    )
    bus.handle(
        bc.DecideClaim(
            claim, True, "clear and tested", EXAMPLE, actor=MONA, at=_utc(2026, 10, 30, 12)
        )
    )
    period = bus.handle(bc.OpenPeriod(date(2026, 10, 1), EXAMPLE, actor=TESS, at=start))
    bus.handle(bc.ClosePeriod(period, EXAMPLE, actor=TESS, at=_utc(2026, 11, 2, 9)))
    with lab.new_uow() as uow:
        (nora,) = uow.billing.statements(period_id=period, member_id="nora")
    bus.handle(
        bc.IssueCreditNote(
            nora.id,
            1000,
            "dust extraction broken during s7",
            EXAMPLE,
            actor=TESS,
            at=_utc(2026, 11, 5, 10),
        )
    )
    return int(period)


def _doc_block(name: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"docs/billing.md has no block <!-- {name} -->"
    return match.group(1).splitlines()


@pytest.fixture
def october(lab: ServerRuntime, add_session: AddSession) -> int:
    return build_worked_example(lab, add_session)


def test_worked_example_statements_match_the_doc(lab: ServerRuntime, october: int) -> None:
    with lab.new_uow() as uow:
        rows = []
        for s in uow.billing.statements(period_id=october):
            ref = f"{'AV' if s.kind == 'credit_note' else 'F'}{s.number:06d}"
            rows.append(
                f"{ref} {s.member_id} {s.charges_cents} {s.credits_applied_cents} {s.net_cents}"
            )
            for line in uow.billing.lines(s.id):
                rows.append(
                    f"  {line.session_id} {line.billed_minutes} {line.busy_billed_minutes}"
                    f" {line.free_minutes} {line.amount_cents}"
                )
    assert rows == _doc_block("statements-example")


def test_worked_example_ledgers_are_spent_and_verify(lab: ServerRuntime, october: int) -> None:
    with lab.new_uow() as uow:
        chains = uow.billing.chains()
    assert {m: [(e.kind.value, e.amount_cents) for e in c] for m, c in chains.items()} == {
        "ada": [("earn", 833), ("spend", -833)],
        "linus": [("earn", 300), ("spend", -300)],
    }
    assert all(verify(chain) == [] for chain in chains.values())


def test_worked_example_fec_matches_the_doc_line_by_line(
    lab: ServerRuntime, october: int, auth: Headers
) -> None:
    lab.settings = lab.settings.model_copy(update={"billing_volunteer_cents_per_hour": 1500})
    with TestClient(create_app(lab)) as client:
        response = client.get(
            f"/api/billing/periods/{october}/export", params={"format": "fec"}, headers=auth("tess")
        )
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert lines == _doc_block("fec-example")
    header, *rows = (line.split("|") for line in lines)
    assert tuple(header) == FEC_COLUMNS
    balance: dict[str, int] = {}
    for row in rows:
        assert len(row) == 18
        assert all(re.fullmatch(r"\d{8}", row[i]) for i in (3, 9, 15))
        debit, credit = (int(row[i].replace(",", "")) for i in (11, 12))
        balance[row[2]] = balance.get(row[2], 0) + debit - credit
    assert balance and all(v == 0 for v in balance.values())
