"""The prepaid option through the message bus: settings, the derived balance, what the
laser's signed snapshot says, republishing, and the reconciliation at ingest."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime

import pytest

from protocol import (
    AuthRequest,
    EndReason,
    EventKind,
    Level,
    Prepaid,
    auth_request_topic,
    auth_response_topic,
    badge_digest,
    verify_auth_response,
    verify_config,
)
from server.adapters.orm import AuditEntry
from server.bootstrap import ServerRuntime
from server.domain.errors import DomainError, PermissionDeniedError
from server.service_layer import billing_commands as bc
from server.service_layer import prepaid
from server.service_layer.commands import AnswerAuthRequest, OutgoingMessage
from tests.server.billing.conftest import MONA, POLICY, TESS, AddSession
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Ingest

KEY = bytes.fromhex(KEY_HEX)
OCTOBER = datetime(2026, 10, 8, 12, tzinfo=UTC)


def _prepaid_lab(lab: ServerRuntime, *, threshold: int = 500, overdraft: int = 300) -> None:
    """The laser at 12.00 an hour in 15-minute steps; members (ada) prepaid."""
    lab.bus.handle(bc.AddTariff("cutting", "Cutting", ("laser",), actor=TESS))
    lab.bus.handle(
        bc.AddRate("cutting", date(2026, 1, 1), POLICY, 1200, rounding_minutes=15, actor=TESS)
    )
    lab.bus.handle(bc.SetCategoryPrepaid("member", True, threshold, overdraft, actor=TESS))


def _capture(lab: ServerRuntime) -> list[OutgoingMessage]:
    sent: list[OutgoingMessage] = []
    lab.bus.publish = sent.append
    return sent


def _ada_on_laser(sent: list[OutgoingMessage]) -> Prepaid | None:
    configs = [m for m in sent if m.topic.endswith("/laser/config")]
    assert configs, "no config of the laser was sent"
    entry = verify_config(configs[-1].payload, KEY).lookup(badge_digest(KEY, "04A1B2C3"))
    assert entry is not None
    return entry.prepaid


def _balance(lab: ServerRuntime, member_id: str = "ada") -> int:
    with lab.new_uow() as uow:
        return prepaid.statuses(uow, {member_id})[member_id].balance_cents


def test_prepaid_setting_is_the_treasurers_and_audited(lab: ServerRuntime) -> None:
    with pytest.raises(PermissionDeniedError):
        lab.bus.handle(bc.SetCategoryPrepaid("member", True, 500, 300, actor=MONA))
    lab.bus.handle(bc.SetCategoryPrepaid("member", True, 500, 300, actor=TESS))
    with lab.new_uow() as uow:
        audit = uow.session.query(AuditEntry).filter_by(action="billing.category.prepaid").one()
        assert audit.actor_id == "tess" and "500" in (audit.after or "")


def test_prepaid_setting_refuses_a_negative_overdraft(lab: ServerRuntime) -> None:
    with pytest.raises(DomainError, match="overdraft"):
        lab.bus.handle(bc.SetCategoryPrepaid("member", True, 0, -1, actor=TESS))


def test_prepaid_snapshot_says_below_threshold_without_money(lab: ServerRuntime) -> None:
    sent = _capture(lab)
    _prepaid_lab(lab)
    # Nothing paid: 0 + 3.00 overdraft buys one quarter (3.00), but no start below 5.00.
    assert _ada_on_laser(sent) == Prepaid(may_start=False, allowance_s=15 * 60)


def test_prepaid_top_up_republishes_the_snapshot_with_may_start(lab: ServerRuntime) -> None:
    _prepaid_lab(lab)
    sent = _capture(lab)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 1200, "paid at the desk", actor=TESS))
    # 12.00 + 3.00 overdraft: five quarters.
    assert _ada_on_laser(sent) == Prepaid(may_start=True, allowance_s=5 * 15 * 60)


def test_prepaid_snapshot_of_a_member_not_prepaid_has_no_prepaid(lab: ServerRuntime) -> None:
    sent = _capture(lab)
    lab.bus.handle(bc.SetCategoryPrepaid("member", False, 500, 300, actor=TESS))
    assert _ada_on_laser(sent) is None


def test_prepaid_balance_subtracts_usage_not_yet_approved(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _prepaid_lab(lab)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 2000, "paid", actor=TESS))
    add_session("s1", "ada", "laser", OCTOBER, 3600)  # 12.00
    assert _balance(lab) == 800


def test_prepaid_approved_statement_moves_usage_to_the_ledger_and_republishes(
    lab: ServerRuntime, add_session: AddSession
) -> None:
    _prepaid_lab(lab)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 2000, "paid", actor=TESS))
    add_session("s1", "ada", "laser", OCTOBER, 3600)
    period_id = lab.bus.handle(bc.OpenPeriod(date(2026, 10, 1), POLICY, actor=TESS))
    sent = _capture(lab)
    lab.bus.handle(bc.ClosePeriod(period_id, POLICY, actor=TESS))
    # The 50 % cap: 6.00 of credits spent, 6.00 invoiced as net due.
    assert _balance(lab) == 1400
    assert _ada_on_laser(sent) == Prepaid(may_start=True, allowance_s=5 * 15 * 60)


def _session(events: EventFactory, ingest: Ingest, seconds: float) -> None:
    events.wall -= seconds  # so that the end is not in the future
    ingest(events(EventKind.SESSION_STARTED, session_id="s1", badge_uid="04A1B2C3",
                  member_id="ada", level=Level.AUTONOMOUS.value, snapshot_version=1))  # fmt: skip
    events.wall += seconds
    ingest(events(EventKind.SESSION_ENDED, session_id="s1", reason=EndReason.BADGE.value,
                  elapsed_seconds=seconds, busy_seconds=0.0))  # fmt: skip


def test_prepaid_session_end_republishes_with_the_new_balance(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    _prepaid_lab(lab)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 1200, "paid", actor=TESS))
    sent = _capture(lab)
    _session(events, ingest, 30 * 60)  # 6.00: 6.00 left, 3 quarters with the overdraft
    assert _ada_on_laser(sent) == Prepaid(may_start=True, allowance_s=3 * 15 * 60)
    with lab.new_uow() as uow:
        assert uow.billing.prepaid_overdrafts() == []


def test_prepaid_session_past_the_overdraft_is_billed_in_full_and_flagged(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    _prepaid_lab(lab)
    lab.bus.handle(bc.AdjustLedger("ada", "topup", 600, "paid", actor=TESS))
    _session(events, ingest, 2 * 3600)  # offline, 24.00 on 6.00 paid: -18.00
    assert _balance(lab) == -1800
    with lab.new_uow() as uow:
        (flag,) = uow.billing.prepaid_overdrafts()
        assert (flag.session_id, flag.member_id, flag.balance_cents, flag.overdraft_cents) == (
            "s1", "ada", -1800, 300
        )


def test_prepaid_session_end_before_its_start_is_reconciled_when_the_start_arrives(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    _prepaid_lab(lab)
    events.wall -= 2 * 3600
    start = events(EventKind.SESSION_STARTED, session_id="s1", badge_uid="04A1B2C3",
                   member_id="ada", level=Level.AUTONOMOUS.value, snapshot_version=1)  # fmt: skip
    events.wall += 2 * 3600
    end = events(EventKind.SESSION_ENDED, session_id="s1", reason=EndReason.BADGE.value,
                 elapsed_seconds=2 * 3600.0, busy_seconds=0.0)  # fmt: skip
    ingest(end)
    ingest(start)
    with lab.new_uow() as uow:
        assert [f.session_id for f in uow.billing.prepaid_overdrafts()] == ["s1"]


def test_prepaid_online_check_refuses_a_member_below_the_threshold(lab: ServerRuntime) -> None:
    _prepaid_lab(lab)
    sent = _capture(lab)
    request = AuthRequest(uuid.uuid4().hex, "laser", "04A1B2C3", time.time())
    lab.bus.handle(AnswerAuthRequest(auth_request_topic(SITE, "laser"), request.encode()))
    [answer] = [m for m in sent if m.topic == auth_response_topic(SITE, "laser")]
    response = verify_auth_response(answer.payload, KEY)
    assert (response.granted, response.reason) == (False, "insufficient_balance")
