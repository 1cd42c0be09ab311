"""Prepaid, end to end on a real Mosquitto: a member below the threshold is refused at
the machine (the denial reaches the managers' list), a treasurer's top-up through the
API republishes the snapshot, and the next tap starts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient

from protocol import badge_digest
from server.adapters.orm import BadgeDenial
from server.api.main import create_app
from server.domain.access import Role
from server.domain.billing.policy import BillingPolicy
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.e2e.conftest import ADA_BADGE, KEY_HEX, Lab, wait_until

KEY = bytes.fromhex(KEY_HEX)


@pytest.fixture
def treasurer(lab: Lab) -> Iterator[tuple[TestClient, dict[str, str]]]:
    assert lab.server is not None
    bus = lab.server.bus
    bus.handle(cmds.AddMember("Tess Treasurer", member_id="tess"))
    bus.handle(cmds.SetRoles("tess", frozenset({Role.TREASURER})))
    token = bus.handle(cmds.CreateApiToken("tess", "e2e")).token
    bus.handle(bc.AddTariff("cutting", "Cutting", ("laser",)))
    bus.handle(bc.AddRate("cutting", date(2026, 1, 1), BillingPolicy(), 1200))
    with TestClient(create_app(lab.server)) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def _ada_may_start(lab: Lab) -> bool | None:
    assert lab.controller is not None
    snapshot = lab.controller.controller.snapshot
    entry = snapshot.lookup(badge_digest(KEY, ADA_BADGE)) if snapshot else None
    return None if entry is None or entry.prepaid is None else entry.prepaid.may_start


def _denials(lab: Lab) -> list[str]:
    with lab.uow() as uow:
        return [d.reason for d in uow.session.query(BadgeDenial).filter_by(member_id="ada")]


def test_prepaid_top_up_lets_the_next_tap_start(
    lab: Lab, treasurer: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = treasurer
    prepaid = {"prepaid": True, "threshold": "5.00", "overdraft": "1.00"}
    response = client.put("/api/billing/categories/member/prepaid", json=prepaid, headers=headers)
    assert response.status_code == 200, response.text
    wait_until(lambda: _ada_may_start(lab) is False, what="snapshot saying Ada is below 5.00")
    lab.tap(ADA_BADGE)
    wait_until(lambda: "insufficient_balance" in _denials(lab), what="the denial at the server")
    assert not lab.relay_on

    topup = {"member_id": "ada", "kind": "topup", "amount": "10.00", "reason": "cash"}
    response = client.post("/api/billing/ledger/entries", json=topup, headers=headers)
    assert response.status_code == 201, response.text
    status = client.get("/api/billing/prepaid", params={"member_id": "ada"}, headers=headers)
    assert (status.json()["balance"], status.json()["may_start"]) == ("10.00", True)
    wait_until(lambda: _ada_may_start(lab) is True, what="the top-up reaching the controller")
    lab.tap(ADA_BADGE)
    wait_until(lambda: lab.relay_on, what="relay on after the top-up")
