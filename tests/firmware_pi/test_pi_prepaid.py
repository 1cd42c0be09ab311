"""Prepaid members at the machine, through the whole app on gpiozero's MockFactory: the
threshold refuses a start, the allowance counts down offline on the monotonic clock
and ends the session, a newer snapshot replaces the count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pi_helpers import ALICE, BOB, DAVE, KEY, MANAGER, SUPERVISOR, Rig, lab_snapshot, signed_config

from firmware_pi.signals import Signal
from protocol import EventKind, PermissionSnapshot, Prepaid, TopicKind, badge_digest


def prepaid_snapshot(
    allowance_s: int | None, *, may_start: bool = True, version: int = 1, **settings: object
) -> PermissionSnapshot:
    """The lab's snapshot with Alice and Dave prepaid: `allowance_s` on this machine."""
    base = lab_snapshot(version=version, **settings)
    prepaid = Prepaid(may_start=may_start, allowance_s=allowance_s)
    digests = {badge_digest(KEY, ALICE), badge_digest(KEY, DAVE)}
    entries = tuple(
        replace(e, prepaid=prepaid) if e.badge_digest in digests else e for e in base.permissions
    )
    return replace(base, permissions=entries)


def last(r: Rig, kind: EventKind) -> dict[str, object]:
    return r.events(kind)[-1]


def test_prepaid_below_threshold_is_denied_insufficient_balance(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(3600, may_start=False))
    r.tap(ALICE)
    assert not r.relay_on
    denial = last(r, EventKind.BADGE_DENIED)
    assert (denial["reason"], denial["member_id"]) == ("insufficient_balance", "m-alice")


def test_prepaid_member_above_threshold_starts(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(3600))
    r.tap(ALICE)
    assert r.relay_on


def test_prepaid_session_warns_then_ends_when_allowance_runs_out(
    rig: Callable[..., Rig],
) -> None:
    r = rig(prepaid_snapshot(600, warning_s=60))
    r.tap(ALICE)
    r.advance(539)
    assert EventKind.SESSION_WARNING not in r.kinds()
    r.advance(2)
    warning = last(r, EventKind.SESSION_WARNING)
    assert warning["reason"] == "balance_exhausted"
    assert r.app.hardware.leds.state is Signal.WARNING
    assert r.relay_on
    r.advance(59)
    assert not r.relay_on
    ended = last(r, EventKind.SESSION_ENDED)
    assert ended["reason"] == "balance_exhausted"
    assert ended["elapsed_seconds"] == 600


def test_prepaid_allowance_counts_sessions_since_the_snapshot(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(600))  # offline: no new snapshot comes
    r.tap(ALICE)
    r.advance(400)
    r.tap(ALICE)
    assert not r.relay_on
    r.tap(ALICE)  # 200 s left
    assert r.relay_on
    r.advance(200)
    assert not r.relay_on
    assert last(r, EventKind.SESSION_ENDED)["reason"] == "balance_exhausted"
    r.tap(ALICE)
    assert not r.relay_on
    assert last(r, EventKind.BADGE_DENIED)["reason"] == "insufficient_balance"


def test_prepaid_new_snapshot_after_top_up_lets_the_next_tap_start(
    rig: Callable[..., Rig],
) -> None:
    r = rig(prepaid_snapshot(0, may_start=False), connected=True)
    r.tap(ALICE)
    assert not r.relay_on
    r.deliver(TopicKind.CONFIG, signed_config(prepaid_snapshot(3600, version=2)))
    r.tap(ALICE)
    assert r.relay_on


def test_prepaid_new_snapshot_gives_running_session_its_allowance_from_start(
    rig: Callable[..., Rig],
) -> None:
    r = rig(prepaid_snapshot(600), connected=True)
    r.tap(ALICE)
    r.advance(300)
    r.deliver(TopicKind.CONFIG, signed_config(prepaid_snapshot(1200, version=2)))
    r.advance(850)
    assert r.relay_on
    r.advance(60)
    assert not r.relay_on
    assert last(r, EventKind.SESSION_ENDED)["elapsed_seconds"] == 1200


def test_prepaid_zero_allowance_is_refused_even_above_threshold(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(0))
    r.tap(ALICE)
    assert not r.relay_on
    assert last(r, EventKind.BADGE_DENIED)["reason"] == "insufficient_balance"


def test_prepaid_free_machine_has_no_countdown(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(None))
    r.tap(ALICE)
    r.advance(7200, every=60)
    assert r.relay_on


def test_prepaid_member_not_prepaid_is_not_limited(rig: Callable[..., Rig]) -> None:
    r = rig(prepaid_snapshot(0, may_start=False))
    r.tap(BOB)
    assert r.relay_on


def test_prepaid_supervised_member_below_threshold_does_not_wait(
    rig: Callable[..., Rig],
) -> None:
    r = rig(prepaid_snapshot(0, may_start=False))
    r.tap(DAVE)
    assert r.app.controller.pending_supervision is None
    assert last(r, EventKind.BADGE_DENIED)["reason"] == "insufficient_balance"


def test_prepaid_waiting_supervised_start_is_withdrawn_when_balance_drops(
    rig: Callable[..., Rig],
) -> None:
    r = rig(prepaid_snapshot(3600), connected=True)
    r.tap(DAVE)
    assert r.app.hardware.leds.state is Signal.AWAITING_SUPERVISOR
    r.deliver(TopicKind.CONFIG, signed_config(prepaid_snapshot(0, may_start=False, version=2)))
    r.tap(SUPERVISOR)
    assert not r.relay_on
    assert r.events(EventKind.BADGE_DENIED)[0]["reason"] == "insufficient_balance"


def test_prepaid_manager_maintenance_is_not_limited(rig: Callable[..., Rig]) -> None:
    snapshot = prepaid_snapshot(0, may_start=False, out_of_service=True)
    r = rig(snapshot)
    r.tap(MANAGER)
    r.advance(120)
    assert r.relay_on
