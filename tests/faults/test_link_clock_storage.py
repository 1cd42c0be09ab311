"""Partitions between controller and broker, controller clock jumps, full outbox,
corrupted outbox and snapshot files."""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.conftest import MACHINES, LabFactory, full_only, scale
from tests.faults.harness import wait_for
from tests.faults.proxy import TcpProxy
from tests.faults.test_process_faults import Floor, flap_busy


@pytest.mark.parametrize("engine", [full_only("sqlite"), full_only("postgres")])
def test_partition_controller_broker(fault_lab_factory: LabFactory, engine: str) -> None:
    """A TCP proxy between controllers and broker holds traffic, delays it and resets it."""
    lab = fault_lab_factory(engine)
    proxy = TcpProxy(lab.broker.host, lab.broker.port)
    try:
        controllers = [
            lab.add_controller(MACHINES[0], broker_url=proxy.url),
            lab.add_controller(MACHINES[1], broker_url=proxy.url),
        ]
        lab.wait_snapshots()
        rng = random.Random(23)
        with Floor(lab, controllers, seed=29):
            for _ in range(int(scale(1, 4))):
                time.sleep(rng.uniform(1, 3))
                proxy.hold()  # packets go nowhere; both sides wait on keepalives
                lab.workload.note("partition_hold")
                time.sleep(scale(5, 60))
                proxy.release()
                lab.workload.note("partition_release")
                proxy.delay = 0.4
                time.sleep(3)
                proxy.delay = 0.0
                proxy.reset(refuse=True)  # connections lost, no way back for a while
                lab.workload.note("partition_reset")
                time.sleep(scale(3, 30))
                proxy.release()
                lab.workload.note("partition_heal")
            time.sleep(2)
        lab.settle_and_check(timeout=120)
    finally:
        proxy.close()


@pytest.mark.parametrize("step_s", [3600.0, full_only(-3600.0), full_only(86400.0 * 400)])
def test_controller_clock_jumps(fault_lab_factory: LabFactory, step_s: float) -> None:
    """The controller's wall clock steps (NTP, no RTC) in the middle of a session, then back."""
    lab = fault_lab_factory("sqlite")
    laser = lab.add_controller(MACHINES[0])
    lab.wait_snapshots()
    workload = lab.workload
    workload.start_session(laser, lab.member("ada"))
    time.sleep(1)
    laser.command(f"clock {step_s}")
    workload.note("clock_step", machine="laser", offset=step_s)
    time.sleep(1)
    workload.end_session(laser)  # the end is at real time: the truth
    laser.command("clock 0")
    workload.note("clock_step", machine="laser", offset=0)
    workload.start_session(laser, lab.member("bob"))
    workload.end_session(laser)
    lab.settle_and_check()


@pytest.mark.parametrize("engine", [full_only("sqlite"), full_only("postgres")])
def test_full_outbox_while_server_down(fault_lab_factory: LabFactory, engine: str) -> None:
    """The server is down while the controller fills its (small) outbox to the bound."""
    lab = fault_lab_factory(engine)
    laser = lab.add_controller(MACHINES[0], outbox_max_events=100)
    lab.wait_snapshots()
    workload = lab.workload
    lab.server.kill9()
    workload.note("kill9_server")
    for member in ("ada", "bob", "cyd"):
        workload.start_session(laser, lab.member(member))
        flap_busy(workload, laser, int(scale(36, 120)))  # past the bound: busy changes refused
        workload.end_session(laser)
    status = laser.status()
    assert status["pending"] >= 95, f"the outbox should be at its bound: {status}"
    lab.server.start()
    workload.note("restart_server")
    lab.settle_and_check(timeout=90)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_corrupted_snapshot_file(fault_lab_factory: LabFactory, engine: str) -> None:
    """The stored snapshot is garbage at boot: deny until a valid one arrives, then work."""
    lab = fault_lab_factory(engine)
    laser = lab.add_controller(MACHINES[0])
    lab.wait_snapshots()
    lab.workload.crash(laser, restart=False)
    text = laser.snapshot_path.read_bytes()
    laser.snapshot_path.write_bytes(text[: len(text) // 2] + b"\x00garbage")
    laser.start()
    wait_for(lambda: laser.status()["permissions"] >= 3, 30, "the retained snapshot again")
    lab.workload.start_session(laser, lab.member("ada"))
    lab.workload.end_session(laser)
    lab.settle_and_check()


@pytest.mark.parametrize("damage", ["truncated", full_only("overwritten")])
def test_corrupted_outbox_file(fault_lab_factory: LabFactory, damage: str) -> None:
    """The outbox file is damaged while the controller is down: it must still start, safe."""
    lab = fault_lab_factory("sqlite")
    laser = lab.add_controller(MACHINES[0])
    lab.wait_snapshots()
    lab.workload.start_session(laser, lab.member("ada"))
    lab.workload.end_session(laser)
    wait_for(lambda: laser.status()["pending"] == 0, 30, "outbox drained")
    laser.stop()
    data = laser.outbox_path.read_bytes()
    if damage == "truncated":
        laser.outbox_path.write_bytes(data[: len(data) // 3])
    else:
        middle = len(data) // 2
        laser.outbox_path.write_bytes(data[:middle] + b"\xde\xad" * 512 + data[middle + 1024 :])
    laser.start()
    lab.workload.start_session(laser, lab.member("bob"))
    lab.workload.end_session(laser)
    lab.settle_and_check()
