"""Every scenario of issue 3 through the whole app on gpiozero's MockFactory, the relay
pin asserted at each step. The app is stepped in the test's thread (begin/step) with a
fake clock, so timeouts are exact and the tests fast."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import (
    ALICE,
    BOB,
    BUSY,
    BUZZER,
    CAROL,
    CONTROLLER_ID,
    DAVE,
    KEY,
    MACHINE,
    MANAGER,
    OOPS,
    RELAY,
    SITE,
    STRANGER,
    SUPERVISOR,
    WALL_START,
    FakeClock,
    FakeLink,
    Rig,
    lab_snapshot,
    make_config,
    signed_config,
)

from firmware_pi.bootstrap import build_controller
from firmware_pi.outbox import Outbox
from firmware_pi.reader import SimulatedReader
from firmware_pi.signals import Signal
from protocol import (
    AuthResponse,
    Command,
    CommandKind,
    DenyReason,
    EventKind,
    Level,
    Mode,
    TopicKind,
    badge_digest,
    encode_auth_response,
    encode_command,
)


def last_denial(r: Rig) -> str:
    return str(r.events(EventKind.BADGE_DENIED)[-1]["reason"])


def last_end(r: Rig) -> str:
    return str(r.events(EventKind.SESSION_ENDED)[-1]["reason"])


# -- toggle and hold -------------------------------------------------------------------------


def test_scenario_toggle_tap_on_tap_off(rig: Callable[..., Rig]) -> None:
    r = rig()
    assert not r.relay_on
    r.tap(ALICE)
    assert r.relay_on
    r.advance(30)
    assert r.relay_on
    r.tap(ALICE)
    assert not r.relay_on
    assert last_end(r) == "badge"


def test_scenario_toggle_other_badge_is_refused_while_in_use(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tap(ALICE)
    r.tap(BOB)
    assert r.relay_on
    assert last_denial(r) == "in_use"


def test_scenario_hold_ends_after_card_removal_grace(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(mode=Mode.HOLD, card_removal_grace_s=3))
    r.app.reader.place(ALICE)
    r.step()
    assert r.relay_on
    r.advance(60)  # the card stays: the session goes on
    assert r.relay_on
    r.app.reader.remove()
    r.advance(2)
    assert r.relay_on  # within the grace period
    r.app.reader.place(ALICE)  # put back in time
    r.advance(5)
    assert r.relay_on
    assert EventKind.SESSION_ENDED not in r.kinds()
    r.app.reader.remove()
    r.advance(3)
    assert not r.relay_on
    assert last_end(r) == "card_removed"


# -- levels ------------------------------------------------------------------------------------


def test_scenario_supervised_without_supervisor_never_grants(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(supervisor_window_s=30))
    r.tap(DAVE)
    assert not r.relay_on
    assert r.app.hardware.leds.state is Signal.AWAITING_SUPERVISOR
    r.tap(CAROL)  # not a supervisor (and her training lapsed)
    r.advance(31)
    assert not r.relay_on
    assert last_denial(r) == DenyReason.SUPERVISOR_MISSING
    assert EventKind.SESSION_STARTED not in r.kinds()


@pytest.mark.parametrize(("supervisor", "member"), [(BOB, "m-bob"), (SUPERVISOR, "m-super")])
def test_scenario_supervised_with_trainer_or_supervisor(
    rig: Callable[..., Rig], supervisor: str, member: str
) -> None:
    r = rig(lab_snapshot(supervisor_window_s=30))
    r.tap(DAVE)
    r.advance(10)
    assert not r.relay_on
    r.tap(supervisor)
    assert r.relay_on
    (started,) = r.events(EventKind.SESSION_STARTED)
    assert started["member_id"] == "m-dave"
    assert started["level"] == "supervised"
    assert started["supervisor_member_id"] == member


# -- automatic ends ----------------------------------------------------------------------------


def test_scenario_idle_timeout_warns_then_ends(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(idle_timeout_s=600, warning_s=60))
    r.tap(ALICE)
    r.busy.is_busy = True
    r.advance(100)
    r.busy.is_busy = False
    r.step()
    r.advance(539)  # idle 539 s: no warning yet
    assert EventKind.SESSION_WARNING not in r.kinds()
    r.advance(2)
    assert r.relay_on
    (warning,) = r.events(EventKind.SESSION_WARNING)
    assert warning["reason"] == "idle_timeout"
    assert r.app.hardware.buzzer is not None
    assert r.app.hardware.buzzer.played[-1] is Signal.WARNING
    r.advance(59)
    assert not r.relay_on
    ended = r.events(EventKind.SESSION_ENDED)[-1]
    assert ended["reason"] == "idle_timeout"
    assert ended["busy_seconds"] == pytest.approx(100, abs=1)


def test_scenario_busy_cancels_idle_warning(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(idle_timeout_s=600, warning_s=60))
    r.tap(ALICE)
    r.advance(545)
    assert r.app.hardware.leds.state is Signal.WARNING
    r.busy.is_busy = True
    r.advance(1000)
    assert r.relay_on
    assert r.app.hardware.leds.state is Signal.GRANTED


def test_scenario_max_duration_warns_then_ends(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(max_duration_s=3600, warning_s=120))
    r.tap(ALICE)
    r.busy.is_busy = True
    r.advance(3479, every=10)
    assert EventKind.SESSION_WARNING not in r.kinds()
    r.advance(2)
    assert [w["reason"] for w in r.events(EventKind.SESSION_WARNING)] == ["max_duration"]
    assert r.relay_on
    r.advance(120)
    assert not r.relay_on
    assert last_end(r) == "max_duration"


# -- commands, oops, override ------------------------------------------------------------------


def test_scenario_remote_lock_ends_session(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tap(ALICE)
    r.command(CommandKind.LOCK)
    assert not r.relay_on
    assert last_end(r) == "remote_lock"
    applied = r.events(EventKind.COMMAND_APPLIED)[-1]
    assert (applied["command_id"], applied["command"]) == ("c-1", "lock")
    r.tap(ALICE)  # a lock ends the session; the machine stays usable
    assert r.relay_on


def test_scenario_forged_expired_and_replayed_commands_are_ignored(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.tap(ALICE)
    r.command(CommandKind.LOCK, key=b"x" * 32)  # forged
    assert r.relay_on
    now = int(r.clock.now().wall)
    expired = Command("c-old", CONTROLLER_ID, SITE, MACHINE, CommandKind.LOCK, now - 600, now - 1)
    r.deliver(TopicKind.COMMAND, encode_command(expired, KEY))
    assert r.relay_on
    other = Command("c-x", "ctrl-other", SITE, MACHINE, CommandKind.LOCK, now, now + 60)
    r.deliver(TopicKind.COMMAND, encode_command(other, KEY))
    assert r.relay_on
    payload = r.command(CommandKind.OUT_OF_SERVICE, command_id="c-2", reason="mirror")
    r.command(CommandKind.BACK_IN_SERVICE, command_id="c-3")
    r.deliver(TopicKind.COMMAND, payload)  # replay of c-2: ignored
    assert not r.app.controller.out_of_service
    assert [e["command_id"] for e in r.events(EventKind.COMMAND_APPLIED)] == ["c-2", "c-3"]


def test_scenario_out_of_service_command_and_back(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tap(ALICE)
    r.command(CommandKind.OUT_OF_SERVICE, reason="mirror cracked")
    assert not r.relay_on
    assert last_end(r) == "out_of_service"
    r.tap(ALICE)
    assert not r.relay_on
    assert last_denial(r) == "out_of_service"
    assert r.app.hardware.leds.state is Signal.OUT_OF_SERVICE
    r.command(CommandKind.BACK_IN_SERVICE, command_id="c-2")
    r.tap(ALICE)
    assert r.relay_on


def test_scenario_oops_button_ends_session_and_takes_machine_out(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.tap(ALICE)
    r.pins.pin(OOPS).drive_low()  # pressed (pull-up button)
    r.step()
    r.pins.pin(OOPS).drive_high()
    assert not r.relay_on
    assert r.kinds()[-2:] == [EventKind.OOPS_REPORTED, EventKind.SESSION_ENDED]
    assert last_end(r) == "oops"
    assert r.events(EventKind.OOPS_REPORTED)[-1]["member_id"] == "m-alice"
    r.tap(BOB)
    assert not r.relay_on
    assert last_denial(r) == "out_of_service"


def test_scenario_manager_overrides_out_of_service_for_maintenance(
    rig: Callable[..., Rig],
) -> None:
    r = rig(lab_snapshot(out_of_service=True))
    r.tap(ALICE)
    assert not r.relay_on
    r.tap(MANAGER)
    assert r.relay_on
    started = r.events(EventKind.SESSION_STARTED)[-1]
    assert started["maintenance_override"] is True
    assert started["member_id"] == "m-manager"
    r.tap(MANAGER)
    assert not r.relay_on


def test_scenario_enroll_command_reports_next_badge_without_deciding(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.command(CommandKind.ENROLL_BADGE, timeout_s=30)
    r.tap(STRANGER)
    assert not r.relay_on
    assert r.events(EventKind.BADGE_ENROLLED) == [{"badge_uid": STRANGER, "command_id": "c-1"}]
    r.tap(STRANGER)  # the window is used up: decided as usual
    assert last_denial(r) == "unknown_badge"


# -- restart -----------------------------------------------------------------------------------


def test_scenario_restart_during_session_closes_it_and_keeps_relay_off(tmp_path: Path) -> None:
    first = Rig(tmp_path / "data", snapshot=lab_snapshot(heartbeat_interval_s=60))
    first.tap(ALICE)
    first.advance(130, every=10)  # heartbeats at 60 and 120 s
    assert first.relay_on
    heartbeat_wall = first.events(EventKind.SESSION_HEARTBEAT)[-1]
    last_seq = first.app.outbox.last_seq
    # Power cut: nothing is shut down cleanly; only what is on disk survives.
    first.app.outbox.close()

    second = Rig(tmp_path / "data", snapshot=None)
    try:
        assert not second.relay_on
        second.advance(5)
        assert not second.relay_on
        pending = second.app.outbox.pending(limit=1000)
        ended = [e for e in pending if e.kind is EventKind.SESSION_ENDED]
        assert len(ended) == 1
        assert ended[0].seq == last_seq + 1
        assert ended[0].data["reason"] == "controller_restart"
        assert ended[0].data["elapsed_seconds"] == heartbeat_wall["elapsed_seconds"] == 120
        assert ended[0].data["ended_wall_time"] == WALL_START + 120
        assert ended[0].boot_id != pending[0].boot_id
        assert second.app.outbox.open_session() is None
    finally:
        second.close()
        first.app.hardware.close()


def test_scenario_oops_survives_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path / "data", snapshot=lab_snapshot())
    first.app.report_oops()
    first.step()
    first.close()
    second = Rig(tmp_path / "data", snapshot=None)
    try:
        second.tap(ALICE)
        assert not second.relay_on
        assert last_denial(second) == "out_of_service"
    finally:
        second.close()


# -- snapshots -----------------------------------------------------------------------------------


def test_scenario_forged_config_is_not_used(tmp_path: Path) -> None:
    r = Rig(tmp_path / "data", snapshot=None)
    try:
        r.deliver(TopicKind.CONFIG, signed_config(lab_snapshot(version=5), key=b"f" * 32))
        r.tap(ALICE)
        assert not r.relay_on
        assert last_denial(r) == "no_snapshot"
        # A forged file on disk is refused at the next start too.
        r.config.snapshot_path.write_bytes(signed_config(lab_snapshot(), key=b"f" * 32))
    finally:
        r.close()
    again = Rig(tmp_path / "data", snapshot=None)
    try:
        again.tap(ALICE)
        assert not again.relay_on
    finally:
        again.close()


def test_scenario_older_snapshot_is_not_used(rig: Callable[..., Rig]) -> None:
    r = rig(lab_snapshot(version=5, out_of_service=True))
    r.deliver(TopicKind.CONFIG, signed_config(lab_snapshot(version=4)))
    r.tap(ALICE)
    assert not r.relay_on
    assert last_denial(r) == "out_of_service"


def test_scenario_snapshot_past_max_age_never_grants(rig: Callable[..., Rig]) -> None:
    old = lab_snapshot(issued_at=int(WALL_START) - 8 * 86400)
    r = rig(old, snapshot_max_age_s=7 * 86400)
    r.tap(ALICE)
    assert not r.relay_on
    assert last_denial(r) == "snapshot_too_old"
    fresh = replace(old, version=2, issued_at=int(WALL_START))
    r.deliver(TopicKind.CONFIG, signed_config(fresh))
    r.tap(ALICE)
    assert r.relay_on


# -- online check ----------------------------------------------------------------------------------


def auth_answer(request_id: str, *, granted: bool, key: bytes = KEY) -> bytes:
    response = AuthResponse(
        request_id, CONTROLLER_ID, granted, int(WALL_START),
        member_id="m-new" if granted else None, level=Level.AUTONOMOUS if granted else None,
        reason=None if granted else DenyReason.NOT_TRAINED,
    )
    return encode_auth_response(response, key)


def test_scenario_online_check_grants_unknown_badge(rig: Callable[..., Rig]) -> None:
    r = rig(connected=True, auth_timeout_s=1.5)
    r.tap(STRANGER)
    assert not r.relay_on
    (request,) = r.link.auth_requests
    assert request.badge_uid == STRANGER
    forged = auth_answer(request.request_id, granted=False, key=b"z" * 32)
    r.deliver(TopicKind.AUTH_RESPONSE, forged)
    assert not r.relay_on  # forged: ignored
    r.deliver(TopicKind.AUTH_RESPONSE, auth_answer(request.request_id, granted=True))
    assert r.relay_on
    started = r.events(EventKind.SESSION_STARTED)[-1]
    assert started["decided_online"] is True
    assert started["member_id"] == "m-new"


def test_scenario_online_check_times_out_to_deny(rig: Callable[..., Rig]) -> None:
    r = rig(connected=True, auth_timeout_s=1.5)
    r.tap(STRANGER)
    r.advance(1.0, every=0.25)
    assert EventKind.BADGE_DENIED not in r.kinds()
    r.advance(0.75, every=0.25)
    assert last_denial(r) == "auth_timeout"
    (request,) = r.link.auth_requests
    r.deliver(TopicKind.AUTH_RESPONSE, auth_answer(request.request_id, granted=True))
    assert not r.relay_on  # too late


def test_scenario_offline_unknown_badge_is_denied_at_once(rig: Callable[..., Rig]) -> None:
    r = rig(connected=False, auth_timeout_s=1.5)
    r.tap(STRANGER)
    assert last_denial(r) == "unknown_badge"
    assert r.link.auth_requests == []


# -- inputs on pins ------------------------------------------------------------------------------


def test_scenario_busy_pin_and_buzzer_on_mock_pins(tmp_path: Path) -> None:
    pins = MockFactory()
    cfg = make_config(tmp_path / "data", busy_pin=BUSY, buzzer_pin=BUZZER)
    cfg.data_dir.mkdir(parents=True)
    cfg.snapshot_path.write_bytes(signed_config(lab_snapshot()))
    app = build_controller(cfg, pin_factory=pins, reader=SimulatedReader(), clock=FakeClock(),
                           link=FakeLink())
    app.read_timeout_s = 0.0
    try:
        app.begin()
        app.reader.tap(ALICE)
        app.step()
        pins.pin(BUSY).drive_high()
        app.step()
        app.step()
        assert pins.pin(RELAY).state
        kinds = [e.kind for e in app.outbox.pending()]
        assert kinds == [EventKind.SESSION_STARTED, EventKind.BUSY_STARTED]
        assert app.hardware.buzzer is not None
        assert app.hardware.buzzer.played[-1] is Signal.GRANTED
    finally:
        app.stop()
    assert not pins.pin(RELAY).state
    with Outbox(cfg.outbox_path) as outbox:
        data = [json.loads(json.dumps(e.data)) for e in outbox.pending()]
    assert data[-1]["reason"] == "shutdown"


@pytest.mark.parametrize("active_high", [True, False], ids=["active-high", "active-low"])
def test_scenario_busy_sensor_polarity_from_config_keeps_session_while_working(
    tmp_path: Path, active_high: bool
) -> None:
    """Issue 7 defect 5: `busy_active_high = false` read through config → bootstrap →
    hardware: an active-low sensor pulling its pin low means *working*."""
    pins = MockFactory()
    cfg = make_config(tmp_path / "data", busy_pin=BUSY, busy_active_high=active_high)
    cfg.data_dir.mkdir(parents=True)
    cfg.snapshot_path.write_bytes(signed_config(lab_snapshot(idle_timeout_s=600, warning_s=60)))
    clock = FakeClock()
    app = build_controller(cfg, pin_factory=pins, reader=SimulatedReader(), clock=clock,
                           link=FakeLink())
    app.read_timeout_s = 0.0
    busy_pin = pins.pin(BUSY)

    def sensor(working: bool) -> None:
        if working == active_high:
            busy_pin.drive_high()
        else:
            busy_pin.drive_low()

    try:
        sensor(False)
        app.begin()
        app.step()
        assert app.hardware.busy is not None and not app.hardware.busy.is_busy
        app.reader.tap(ALICE)
        app.step()
        sensor(True)
        for _ in range(700):  # working for 700 s, past the 600 s idle timeout
            clock.advance(1)
            app.step()
        assert pins.pin(RELAY).state, "idle timeout cut the power of a working tool"
        kinds = [e.kind for e in app.outbox.pending(limit=1000)]
        assert EventKind.BUSY_STARTED in kinds
        assert EventKind.SESSION_ENDED not in kinds
        sensor(False)
        for _ in range(601):
            clock.advance(1)
            app.step()
        assert not pins.pin(RELAY).state
        ended = [e.data for e in app.outbox.pending(limit=1000)
                 if e.kind is EventKind.SESSION_ENDED]
        assert ended[-1]["reason"] == "idle_timeout"
        assert ended[-1]["busy_seconds"] == pytest.approx(700, abs=2)
    finally:
        app.stop()


@pytest.mark.parametrize("change", ["member_removed", "out_of_service"])
def test_scenario_supervised_start_does_not_survive_a_snapshot_change(
    rig: Callable[..., Rig], change: str
) -> None:
    """Issue 7 defect 4: Dave waits for a supervisor, a new snapshot arrives that
    removes him or takes the machine out of service, the trainer taps: no session
    for Dave, and the relay stays off."""
    r = rig(lab_snapshot(supervisor_window_s=60))
    r.tap(DAVE)
    assert r.app.hardware.leds.state is Signal.AWAITING_SUPERVISOR
    if change == "out_of_service":
        new = lab_snapshot(version=2, supervisor_window_s=60, out_of_service=True)
    else:
        new = lab_snapshot(version=2, supervisor_window_s=60)
        dave = badge_digest(KEY, DAVE)
        new = replace(new, permissions=tuple(
            p for p in new.permissions if p.badge_digest != dave))
    r.deliver(TopicKind.CONFIG, signed_config(new))
    assert last_denial(r) in ("unknown_badge", "out_of_service")

    r.tap(SUPERVISOR)  # staff supervisor: would confirm Dave, never starts a session alone

    assert not r.relay_on
    assert r.events(EventKind.SESSION_STARTED) == []
