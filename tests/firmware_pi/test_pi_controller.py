"""The pure state machine: decisions, sessions, heartbeats and busy accounting."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pi_helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    KEY,
    STRANGER,
    WALL_START,
    lab_snapshot,
    make_snapshot,
)

from firmware_pi.clock import Instant
from firmware_pi.controller import Controller, Effect, EmitEvent, SetRelay, ShowSignal
from firmware_pi.signals import Signal
from protocol import (
    Command,
    CommandKind,
    EndReason,
    EventKind,
    PermissionSnapshot,
    ProtocolError,
    badge_digest,
    validate_event_data,
)


def at(seconds: float) -> Instant:
    """`seconds` after the test lab's start, on both clocks."""
    return Instant(wall=WALL_START + seconds, mono=1000.0 + seconds)


def make_controller(**snapshot_options: Any) -> Controller:
    ids = (f"session-{n}" for n in itertools.count(1))
    return Controller(
        key=KEY, snapshot=make_snapshot(**snapshot_options), new_session_id=lambda: next(ids)
    )


def events(effects: list[Effect]) -> list[EmitEvent]:
    return [e for e in effects if isinstance(e, EmitEvent)]


def only_event(effects: list[Effect]) -> EmitEvent:
    (event,) = events(effects)
    # Every event the controller makes must be one the protocol accepts as is.
    assert validate_event_data(event.kind, event.data) == event.data
    return event


def test_controller_grants_trained_badge() -> None:
    controller = make_controller()

    effects = controller.tap(ALICE, at(0))

    event = only_event(effects)
    assert event.kind is EventKind.SESSION_STARTED
    assert event.data == {
        "session_id": "session-1",
        "badge_uid": ALICE,
        "member_id": "m-alice",
        "level": "autonomous",
        "snapshot_version": 1,
    }
    assert SetRelay(on=True) in effects
    assert ShowSignal(Signal.GRANTED) in effects


def test_controller_emits_event_before_relay_effect() -> None:
    effects = make_controller().tap(ALICE, at(0))

    assert isinstance(effects[0], EmitEvent)


def test_controller_keeps_granted_session() -> None:
    controller = make_controller()

    controller.tap(ALICE, at(0))

    assert controller.session is not None
    assert controller.session.session_id == "session-1"
    assert controller.session.member_id == "m-alice"


def test_controller_normalizes_tapped_uid() -> None:
    controller = make_controller()

    controller.tap("04:a1:b2:c3", at(0))

    assert controller.session is not None


def test_controller_rejects_malformed_uid() -> None:
    with pytest.raises(ProtocolError):
        make_controller().tap("not-a-uid", at(0))


def test_controller_denies_unknown_badge() -> None:
    controller = make_controller()

    effects = controller.tap(STRANGER, at(0))

    event = only_event(effects)
    assert event.kind is EventKind.BADGE_DENIED
    assert event.data == {"badge_uid": STRANGER, "reason": "unknown_badge"}
    assert not any(isinstance(e, SetRelay) for e in effects)
    assert ShowSignal(Signal.DENIED) in effects
    assert controller.session is None


def test_controller_denies_expired_training() -> None:
    event = only_event(make_controller().tap(CAROL, at(0)))

    assert event.data == {
        "badge_uid": CAROL,
        "reason": "training_expired",
        "member_id": "m-carol",
    }


def test_controller_denies_training_at_its_expiry_time() -> None:
    # Bob's training ends one hour after the start of the test lab.
    event = only_event(make_controller().tap(BOB, at(3600)))

    assert event.data["reason"] == "training_expired"


def test_controller_grants_training_before_its_expiry_time() -> None:
    event = only_event(make_controller().tap(BOB, at(3599)))

    assert event.kind is EventKind.SESSION_STARTED


def test_controller_denies_when_out_of_service() -> None:
    controller = make_controller(out_of_service=True)

    effects = controller.tap(ALICE, at(0))

    assert only_event(effects).data == {
        "badge_uid": ALICE,
        "reason": "out_of_service",
        "member_id": "m-alice",
    }
    assert controller.session is None


def test_controller_denies_without_snapshot() -> None:
    controller = Controller(key=KEY)

    effects = controller.tap(ALICE, at(0))

    assert only_event(effects).data == {"badge_uid": ALICE, "reason": "no_snapshot"}
    assert not any(isinstance(e, SetRelay) for e in effects)


def test_controller_ends_session_on_same_badge() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    effects = controller.tap(ALICE, at(90.5))

    event = only_event(effects)
    assert event.kind is EventKind.SESSION_ENDED
    assert event.data == {
        "session_id": "session-1",
        "reason": "badge",
        "elapsed_seconds": 90.5,
        "busy_seconds": 0.0,
    }
    assert SetRelay(on=False) in effects
    assert ShowSignal(Signal.IDLE) in effects
    assert controller.session is None


def test_controller_denies_other_badge_while_in_use() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    effects = controller.tap(BOB, at(10))

    assert only_event(effects).data == {"badge_uid": BOB, "reason": "in_use", "member_id": "m-bob"}
    assert not any(isinstance(e, SetRelay) for e in effects)
    assert controller.session is not None
    assert controller.session.member_id == "m-alice"


def test_controller_starts_new_session_after_end() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))
    controller.tap(ALICE, at(5))

    event = only_event(controller.tap(BOB, at(6)))

    assert event.data["session_id"] == "session-2"


def test_controller_sends_heartbeat_after_interval() -> None:
    controller = make_controller(heartbeat_interval_s=30)
    controller.tap(ALICE, at(0))

    assert controller.tick(at(29.9)) == []
    event = only_event(controller.tick(at(30)))

    assert event.kind is EventKind.SESSION_HEARTBEAT
    assert event.data == {"session_id": "session-1", "elapsed_seconds": 30.0, "busy_seconds": 0.0}


def test_controller_spaces_heartbeats_from_the_last_one() -> None:
    controller = make_controller(heartbeat_interval_s=30)
    controller.tap(ALICE, at(0))
    controller.tick(at(45))  # a late tick

    assert controller.tick(at(74)) == []
    assert only_event(controller.tick(at(75))).data["elapsed_seconds"] == 75.0


def test_controller_sends_no_heartbeat_when_idle() -> None:
    assert make_controller(heartbeat_interval_s=1).tick(at(100)) == []


def test_controller_accounts_busy_time_in_session() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))
    controller.set_busy(True, at(10))
    controller.set_busy(False, at(25))
    controller.set_busy(True, at(40))

    event = only_event(controller.tap(ALICE, at(50)))

    assert event.data["busy_seconds"] == 25.0
    assert event.data["elapsed_seconds"] == 50.0


def test_controller_counts_busy_from_session_start_when_already_busy() -> None:
    controller = make_controller()
    controller.set_busy(True, at(0))
    controller.tap(ALICE, at(10))

    event = only_event(controller.tap(ALICE, at(30)))

    assert event.data["busy_seconds"] == 20.0


def test_controller_reports_busy_so_far_in_heartbeat() -> None:
    controller = make_controller(heartbeat_interval_s=60)
    controller.tap(ALICE, at(0))
    controller.set_busy(True, at(45))

    assert only_event(controller.tick(at(60))).data["busy_seconds"] == 15.0


def test_controller_emits_busy_events_with_session_id() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    started = only_event(controller.set_busy(True, at(1)))
    ended = only_event(controller.set_busy(False, at(2)))

    assert (started.kind, started.data) == (EventKind.BUSY_STARTED, {"session_id": "session-1"})
    assert (ended.kind, ended.data) == (EventKind.BUSY_ENDED, {"session_id": "session-1"})


def test_controller_emits_busy_events_without_session() -> None:
    event = only_event(make_controller().set_busy(True, at(0)))

    assert (event.kind, event.data) == (EventKind.BUSY_STARTED, {})


def test_controller_ignores_unchanged_busy_input() -> None:
    controller = make_controller()
    controller.set_busy(True, at(0))

    assert controller.set_busy(True, at(1)) == []


def test_controller_stop_ends_running_session_with_reason() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    effects = controller.stop(EndReason.SHUTDOWN, at(12))

    assert only_event(effects).data["reason"] == "shutdown"
    assert SetRelay(on=False) in effects
    assert controller.session is None


def test_controller_stop_without_session_does_nothing() -> None:
    assert make_controller().stop(EndReason.SHUTDOWN, at(0)) == []


def test_controller_keeps_session_across_new_snapshot() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    effects = controller.set_snapshot(make_snapshot(version=2, heartbeat_interval_s=30), at(5))

    assert events(effects) == []
    assert SetRelay(on=False) not in effects
    assert controller.session is not None
    assert controller.snapshot is not None
    assert controller.snapshot.version == 2


def test_controller_ends_session_when_snapshot_says_out_of_service() -> None:
    controller = make_controller()
    controller.tap(ALICE, at(0))

    effects = controller.set_snapshot(make_snapshot(version=2, out_of_service=True), at(5))

    assert only_event(effects).data["reason"] == "out_of_service"
    assert SetRelay(on=False) in effects
    assert controller.session is None


def test_controller_decides_from_the_newest_snapshot() -> None:
    controller = make_controller()
    controller.set_snapshot(make_snapshot(version=2, out_of_service=True), at(0))

    assert only_event(controller.tap(ALICE, at(1))).data["reason"] == "out_of_service"


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("tap"), st.sampled_from([ALICE, BOB, CAROL, STRANGER])),
        st.tuples(st.just("busy"), st.booleans()),
        st.tuples(st.just("wait"), st.floats(min_value=0, max_value=4000)),
        st.tuples(st.just("stop"), st.just(None)),
    ),
    max_size=60,
)


@given(steps=STEPS)
@settings(max_examples=200, deadline=None)
def test_controller_keeps_relay_sessions_and_busy_time_consistent(
    steps: list[tuple[str, Any]],
) -> None:
    controller = make_controller(heartbeat_interval_s=60)
    clock, relay_on = 0.0, False
    started: set[str] = set()
    ended: set[str] = set()
    for action, arg in steps:
        if action == "wait":
            clock += arg
            effects = controller.tick(at(clock))
        elif action == "tap":
            effects = controller.tap(arg, at(clock))
        elif action == "busy":
            effects = controller.set_busy(arg, at(clock))
        else:
            effects = controller.stop(EndReason.SHUTDOWN, at(clock))
        for effect in effects:
            if isinstance(effect, SetRelay):
                relay_on = effect.on
            elif isinstance(effect, EmitEvent):
                assert validate_event_data(effect.kind, effect.data) == effect.data
                data = effect.data
                if effect.kind is EventKind.SESSION_STARTED:
                    assert data["member_id"] in ("m-alice", "m-bob")
                    started.add(data["session_id"])
                if effect.kind is EventKind.SESSION_ENDED:
                    assert data["session_id"] in started - ended
                    ended.add(data["session_id"])
                if "busy_seconds" in data:
                    assert data["busy_seconds"] <= data["elapsed_seconds"]
        # The relay is on exactly while a granted session runs.
        assert relay_on == (controller.session is not None)
    assert len(started - ended) == (1 if controller.session is not None else 0)


# -- issue 7 defect 4: a waiting supervised start is decided again --------------------------


def supervised_controller(**settings: Any) -> Controller:
    """Dave (supervised) has tapped and waits for a supervisor on the lab snapshot."""
    ids = (f"session-{n}" for n in itertools.count(1))
    controller = Controller(key=KEY, snapshot=lab_snapshot(supervisor_window_s=60, **settings),
                            new_session_id=lambda: next(ids))
    controller.tap(DAVE, at(0))
    assert controller.pending_supervision is not None
    return controller


def without_dave(version: int = 2, **settings: Any) -> PermissionSnapshot:
    snapshot = lab_snapshot(version=version, supervisor_window_s=60, **settings)
    dave = badge_digest(KEY, DAVE)
    return replace(snapshot, permissions=tuple(
        p for p in snapshot.permissions if p.badge_digest != dave))


def started_members(effects: list[Effect]) -> list[str]:
    return [e.data["member_id"] for e in events(effects) if e.kind is EventKind.SESSION_STARTED]


def test_controller_withdraws_supervised_start_when_snapshot_drops_the_member() -> None:
    controller = supervised_controller()

    effects = controller.set_snapshot(without_dave(), at(5))

    assert only_event(effects).data == {"badge_uid": DAVE, "reason": "unknown_badge",
                                        "member_id": "m-dave"}
    assert controller.pending_supervision is None
    assert "m-dave" not in started_members(controller.tap(BOB, at(6)))


def test_controller_withdraws_supervised_start_when_machine_goes_out_of_service() -> None:
    controller = supervised_controller()

    effects = controller.set_snapshot(lab_snapshot(version=2, out_of_service=True), at(5))

    assert only_event(effects).data["reason"] == "out_of_service"
    trainer_tap = controller.tap(BOB, at(6))
    assert SetRelay(on=True) not in trainer_tap
    assert controller.session is None


def test_controller_withdraws_supervised_start_on_out_of_service_command() -> None:
    controller = supervised_controller()
    now = int(at(5).wall)
    command = Command("c-1", "controller", "testlab", "laser", CommandKind.OUT_OF_SERVICE,
                      now, now + 60)

    controller.command(command, at(5))

    assert controller.pending_supervision is None
    assert SetRelay(on=True) not in controller.tap(BOB, at(6))


def test_controller_withdraws_supervised_start_when_training_expires_while_waiting() -> None:
    controller = supervised_controller()
    dave = badge_digest(KEY, DAVE)
    assert controller.snapshot is not None
    expiring = replace(controller.snapshot, version=2, permissions=tuple(
        replace(p, expires_at=int(at(10).wall)) if p.badge_digest == dave else p
        for p in controller.snapshot.permissions))
    controller.set_snapshot(expiring, at(1))
    assert controller.pending_supervision is not None

    effects = controller.tick(at(10))

    assert only_event(effects).data["reason"] == "training_expired"
    assert "m-dave" not in started_members(controller.tap(BOB, at(11)))


def test_controller_supervisor_tap_runs_the_snapshot_age_check() -> None:
    controller = supervised_controller()
    controller.snapshot_max_age_s = 30

    effects = controller.tap(BOB, at(31))  # no tick in between: the tap itself checks

    assert only_event(effects).data["reason"] == "snapshot_too_old"
    assert SetRelay(on=True) not in effects
    assert controller.session is None


def test_controller_keeps_a_supervised_start_the_new_snapshot_still_allows() -> None:
    controller = supervised_controller()

    assert events(controller.set_snapshot(lab_snapshot(version=2, supervisor_window_s=60),
                                          at(5))) == []
    assert started_members(controller.tap(BOB, at(6))) == ["m-dave"]
