"""The live floor read model: one reading shared until a command, its age or a
controller's silence ends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol import ControllerState, ControllerStatus, status_topic
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.floor_view import FloorView
from tests.server.conftest import SITE


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _online(lab: ServerRuntime) -> None:
    status = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "boot-1", 1.0)
    lab.bus.handle(cmds.RecordControllerStatus(status_topic(SITE, "laser"), status.encode()))


def test_floor_view_shares_one_reading_until_something_changes(lab: ServerRuntime) -> None:
    first = lab.floor.read()
    assert lab.floor.read() is first
    assert lab.floor.fresh() is first


def test_floor_view_reloads_after_the_bus_handles_a_command(lab: ServerRuntime) -> None:
    before = lab.floor.read()
    _online(lab)
    assert lab.floor.fresh() is None
    after = lab.floor.read()
    assert (before.machines[0].state, after.machines[0].state) == ("offline", "free")


def test_floor_view_reloads_once_older_than_its_max_age(lab: ServerRuntime) -> None:
    clock = ManualClock()
    view = FloorView(lab.new_uow, max_age_s=2.0, clock=clock)
    first = view.read()
    clock.now += 2.5
    assert view.fresh() is None
    assert view.read() is not first


def test_floor_view_reading_ends_when_a_silent_controller_would_turn_offline(
    lab: ServerRuntime,
) -> None:
    _online(lab)
    reading = lab.floor.read()
    [machine] = reading.machines
    assert machine.controller is not None and machine.controller.last_seen_at is not None
    silence = timedelta(seconds=3 * machine.heartbeat_interval_s)
    assert reading.valid_until == machine.controller.last_seen_at + silence


def test_floor_view_counts_controllers_online(lab: ServerRuntime) -> None:
    assert lab.floor.read().controllers_online == 0
    _online(lab)
    assert lab.floor.read().controllers_online == 1


def test_floor_view_reading_is_stale_past_valid_until(lab: ServerRuntime) -> None:
    _online(lab)
    reading = lab.floor.read()
    reading.valid_until = datetime.now(UTC) - timedelta(seconds=1)
    assert lab.floor.fresh() is None
