"""Smaller parts added for issue 3: bounded outbox, sd_notify, keyboard reader, debounce,
busy sensor threshold, buzzer patterns, and the check / safe-off commands."""

from __future__ import annotations

import io
import os
import socket
import time
import types
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import CONTROLLER_ID, KEY_HEX, wait_until
from typer.testing import CliRunner

from firmware_pi.cli import app
from firmware_pi.hardware import BUZZER_PATTERNS, BusySensor
from firmware_pi.outbox import Outbox, OutboxFullError
from firmware_pi.reader import Debouncer, KeyboardWedgeReader
from firmware_pi.watchdog import SystemdNotifier
from protocol import EventKind


def add(outbox: Outbox, kind: EventKind, data: dict[str, Any]) -> int:
    return outbox.append(kind, data, wall_time=1.0, mono_time=1.0, boot_id="b",
                         controller_id=CONTROLLER_ID).seq


def test_outbox_coalesces_heartbeats_near_its_bound_without_seq_gaps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_events=10, warn_ratio=0.5) as outbox:
        add(outbox, EventKind.SESSION_STARTED, {"session_id": "s", "badge_uid": "04A1B2C3",
                                                "member_id": "m", "level": "autonomous",
                                                "snapshot_version": 1})
        seqs = [add(outbox, EventKind.SESSION_HEARTBEAT,
                    {"session_id": "s", "elapsed_seconds": float(i), "busy_seconds": 0.0})
                for i in range(1, 10)]
        assert "outbox holds" in caplog.text
        assert seqs[:4] == [2, 3, 4, 5]
        assert set(seqs[4:]) == {5}  # folded into the latest pending heartbeat in place
        assert len(outbox) == 5
        assert outbox.pending()[-1].data["elapsed_seconds"] == 9.0
        assert outbox.open_session() is not None
        assert outbox.open_session().elapsed_seconds == 9.0  # type: ignore[union-attr]
        assert [e.seq for e in outbox.pending()] == [1, 2, 3, 4, 5]


def test_outbox_at_bound_refuses_busy_but_keeps_session_ends(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_events=10) as outbox:
        for _ in range(10):
            add(outbox, EventKind.BUSY_STARTED, {})
        with pytest.raises(OutboxFullError):
            add(outbox, EventKind.BUSY_ENDED, {})
        seq = add(outbox, EventKind.SESSION_ENDED, {"session_id": "s", "reason": "badge",
                                                    "elapsed_seconds": 1.0, "busy_seconds": 0.0})
        assert seq == 11
        assert outbox.refused == 1
        outbox.ack(11)
        assert len(outbox) == 0
        add(outbox, EventKind.BUSY_ENDED, {})


def test_outbox_remembers_commands_and_local_service(tmp_path: Path) -> None:
    from firmware_pi.outbox import LocalService

    with Outbox(tmp_path / "o.sqlite3") as outbox:
        outbox.remember_command("c-1", 100.0, now=50.0)
        outbox.set_local_service(LocalService(True, "oops button"))
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        assert outbox.command_seen("c-1")
        assert outbox.local_service() == LocalService(True, "oops button")
        outbox.remember_command("c-2", 300.0, now=200.0)  # c-1 expired: forgotten
        assert not outbox.command_seen("c-1")


def test_watchdog_sends_ready_and_rate_limited_pings(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(1.0)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000",
                                    "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_s == 2.0
        notifier.ready("up")
        assert server.recv(100) == b"READY=1\nSTATUS=up"
        notifier.ping(10.0)
        notifier.ping(10.5)  # within half the period: not sent
        notifier.ping(11.0)
        notifier.stopping()
        assert [server.recv(100) for _ in range(3)] == [b"WATCHDOG=1", b"WATCHDOG=1",
                                                         b"STOPPING=1"]
        notifier.close()
    finally:
        server.close()


def test_watchdog_does_nothing_outside_systemd() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False


def test_debouncer_counts_a_held_card_once() -> None:
    d = Debouncer(rearm_s=0.5)
    assert d.seen("04A1B2C3", 0.0) == "04A1B2C3"
    assert [d.seen("04A1B2C3", t / 10) for t in range(1, 20)] == [None] * 19
    assert d.seen("04A1B2C3", 3.0) == "04A1B2C3"  # away long enough: a new tap
    assert d.seen("04B0B0B0", 3.1) == "04B0B0B0"


def test_keyboard_reader_reads_lines_debounced() -> None:
    stream = io.StringIO("04a1b2c3\n04A1B2C3\nnot a uid\n\n0012345678\n")
    reader = KeyboardWedgeReader(stream=stream, rearm_s=1.0, clock=lambda: 5.0)
    try:
        assert reader.read(2.0) == "04A1B2C3"
        assert reader.read(2.0) == "0012345678"
        assert reader.read(0.05) is None
        assert not reader.senses_presence
    finally:
        reader.close()


def test_keyboard_reader_on_evdev_device_grabs_and_decodes_keys() -> None:
    ecodes = types.SimpleNamespace(EV_KEY=1, KEY={2: "KEY_1", 30: "KEY_A", 28: "KEY_ENTER",
                                                 42: "KEY_LEFTSHIFT", 11: "KEY_0"})
    events = [types.SimpleNamespace(type=1, code=c, value=v) for c, v in
              [(11, 1), (11, 0), (2, 1), (42, 1), (30, 1), (30, 0), (2, 1), (28, 1)]]

    class InputDevice:
        grabbed = False

        def __init__(self, path: str) -> None:
            self.path = path

        def grab(self) -> None:
            InputDevice.grabbed = True

        def ungrab(self) -> None:
            InputDevice.grabbed = False

        def close(self) -> None:
            pass

        def read_loop(self) -> Any:
            yield from events
            while True:
                time.sleep(0.01)
                yield types.SimpleNamespace(type=0, code=0, value=0)

    evdev = types.SimpleNamespace(InputDevice=InputDevice, ecodes=ecodes)
    reader = KeyboardWedgeReader(device="/dev/input/event7", evdev_module=evdev)
    try:
        assert InputDevice.grabbed
        assert reader.read(2.0) == "01A1"
    finally:
        reader.close()
    assert not InputDevice.grabbed


def test_busy_sensor_threshold_has_hysteresis() -> None:
    adc = types.SimpleNamespace(value=0.0, close=lambda: None)
    sensor = BusySensor(adc=adc, threshold=0.2, hysteresis=0.02)
    readings = [0.0, 0.21, 0.23, 0.19, 0.17, 0.21, 0.22]
    states = []
    for value in readings:
        adc.value = value
        states.append(sensor.is_busy)
    assert states == [False, False, True, True, False, False, True]
    assert sensor.kind == "analog"


def test_busy_sensor_digital_pin(pin_factory: MockFactory) -> None:
    with BusySensor(pin=5, pin_factory=pin_factory, bounce_time=None) as sensor:
        assert not sensor.is_busy
        pin_factory.pin(5).drive_high()
        assert sensor.is_busy


def test_buzzer_patterns_are_distinct() -> None:
    patterns = list(BUZZER_PATTERNS.values())
    assert len(set(patterns)) == len(patterns)


def test_cli_check_and_safe_off(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'controller_id = "ctrl-cli"\nsite = "lab"\nmachine = "lathe"\n'
                    f'broker_url = "mqtt://127.0.0.1:1"\nkey_hex = "{KEY_HEX}"\n'
                    f'data_dir = "data"\nbusy_pin = 5\noops_pin = 6\n')
    runner = CliRunner()
    result = runner.invoke(app, ["check", "-c", str(path), "--mock-pins", "--no-broker"])
    assert result.exit_code == 0, result.output
    assert "relay 17: off" in result.output
    assert KEY_HEX not in result.output
    assert "busy input (digital)" in result.output
    result = runner.invoke(app, ["safe-off", "-c", str(path), "--mock-pins"])
    assert result.exit_code == 0
    assert "relay off" in result.output


def test_cli_simulate_drives_the_controller_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'controller_id = "ctrl-cli"\nsite = "lab"\nmachine = "lathe"\n'
                    f'broker_url = "mqtt://127.0.0.1:1"\nkey_hex = "{KEY_HEX}"\n'
                    f'data_dir = "data"\n')
    result = CliRunner().invoke(app, ["simulate", "-c", str(path)],
                                input="tap 04A1B2C3\nbusy on\nfoo\nquit\n")
    assert result.exit_code == 0, result.output
    assert "relay off, no session, busy=True" in result.output
    assert "stopped; relay off" in result.output
    wait_until(lambda: True)


@pytest.mark.parametrize("pull_up", [None, True, False])
def test_busy_sensor_active_low_reads_low_pin_as_busy(
    pin_factory: MockFactory, pull_up: bool | None
) -> None:
    with BusySensor(pin=5, active_high=False, pull_up=pull_up, pin_factory=pin_factory,
                    bounce_time=None) as sensor:
        pin_factory.pin(5).drive_high()
        assert not sensor.is_busy
        pin_factory.pin(5).drive_low()
        assert sensor.is_busy


def test_cli_check_says_when_the_broker_cannot_be_reached(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'controller_id = "ctrl-cli"\nsite = "lab"\nmachine = "lathe"\n'
                    f'broker_url = "mqtt://127.0.0.1:1"\nkey_hex = "{KEY_HEX}"\n'
                    f'data_dir = "data"\n')
    result = CliRunner().invoke(app, ["check", "-c", str(path), "--mock-pins"])
    assert result.exit_code == 1
    assert "broker: PROBLEM: cannot reach the broker at 127.0.0.1:1" in result.output
