"""The live state shown for a machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.domain.floor import MachineState, controller_online, machine_state


def test_machine_state_free_when_online_and_unused() -> None:
    assert (
        machine_state(controller_online=True, out_of_service=False, in_use=False)
        is MachineState.FREE
    )


def test_machine_state_in_use_even_when_link_dropped() -> None:
    assert (
        machine_state(controller_online=False, out_of_service=False, in_use=True)
        is MachineState.IN_USE
    )


def test_machine_state_offline_when_controller_gone() -> None:
    assert (
        machine_state(controller_online=False, out_of_service=False, in_use=False)
        is MachineState.OFFLINE
    )


def test_machine_state_out_of_service_when_flagged() -> None:
    assert (
        machine_state(controller_online=True, out_of_service=True, in_use=False)
        is MachineState.OUT_OF_SERVICE
    )


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_controller_online_when_heard_within_three_intervals() -> None:
    seen = NOW - timedelta(seconds=170)
    assert controller_online(status="online", last_seen_at=seen, heartbeat_interval_s=60, now=NOW)


def test_controller_offline_after_three_missed_heartbeats() -> None:
    seen = NOW - timedelta(seconds=181)
    assert not controller_online(
        status="online", last_seen_at=seen, heartbeat_interval_s=60, now=NOW
    )


def test_controller_offline_when_its_will_said_so() -> None:
    assert not controller_online(
        status="offline", last_seen_at=NOW, heartbeat_interval_s=60, now=NOW
    )
