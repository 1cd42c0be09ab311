"""Process faults: kill -9 of a controller, of the server, of the broker; the broker down.

Each scenario drives real processes with a scripted workload, injects its fault, lets
the system settle, then checks (tests/faults/harness.py): every session recorded exactly
once by its machine within 1 s of the truth (or closed `controller_restart` at the last
heartbeat), no seq acked that the server does not hold, no relay on without a grant.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from tests.faults.conftest import MACHINES, FaultLab, LabFactory, full_only, scale
from tests.faults.harness import ControllerProcess, MemberSpec, Workload
from tests.fixtures import MosquittoServer
from tests.fixtures.mosquitto import wait_for_port_closed


def kill9_broker(broker: MosquittoServer) -> None:
    """SIGKILL the broker (no clean shutdown: what it did not save is gone)."""
    process = broker._process
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    broker._process = None
    wait_for_port_closed(broker.host, broker.port)


def flap_busy(workload: Workload, controller: ControllerProcess, times: int) -> None:
    """Busy on/off in quick succession: the outbox is being written when a fault lands.

    Each change is held for a few main-loop iterations (the loop polls the input every
    ~50 ms), so that every one of them becomes an event.
    """
    for i in range(times):
        workload.busy(controller, on=i % 2 == 0)
        time.sleep(0.15)
    workload.busy(controller, on=False)


class Floor:
    """Members using machines in a background thread while a fault is injected."""

    def __init__(self, lab: FaultLab, controllers: list[ControllerProcess], seed: int) -> None:
        self.lab = lab
        self.controllers = controllers
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(c, m), daemon=True)
            for c, m in zip(controllers, ("ada", "bob", "cyd"), strict=False)
        ]

    def __enter__(self) -> Floor:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        if self.errors:
            raise self.errors[0]

    def _run(self, controller: ControllerProcess, member_id: str) -> None:
        member: MemberSpec = self.lab.member(member_id)
        workload = self.lab.workload
        try:
            while not self.stop.is_set():
                workload.start_session(controller, member)
                for _ in range(self.rng.randint(1, 4)):
                    self.stop.wait(self.rng.uniform(0.2, 1.5))
                    workload.busy(controller, on=True)
                    self.stop.wait(self.rng.uniform(0.2, 1.5))
                    workload.busy(controller, on=False)
                workload.end_session(controller)
                self.stop.wait(self.rng.uniform(0.1, 1.0))
        except BaseException as exc:
            self.errors.append(exc)


# -- controller kill -9 ----------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", full_only("postgres")])
def test_controller_kill9_mid_session(fault_lab_factory: LabFactory, engine: str) -> None:
    """kill -9 of a controller at random points (idle, mid-session, mid-write), repeatedly."""
    lab = fault_lab_factory(engine)
    laser = lab.add_controller(MACHINES[0])
    cnc = lab.add_controller(MACHINES[1])
    lab.wait_snapshots()
    rng = random.Random(7)
    workload = lab.workload
    for cycle in range(int(scale(4, 25))):
        workload.start_session(cnc, lab.member("bob"))  # a neighbour that keeps working
        where = cycle % 3
        if where == 0:  # idle controller
            time.sleep(rng.uniform(0, 1))
        else:
            workload.start_session(laser, lab.member("ada"))
            time.sleep(rng.uniform(0.2, 1.3 * 5))  # across a heartbeat or not
            if where == 2:
                flap_busy(workload, laser, rng.randint(3, 12))  # kill lands mid-write
        workload.crash(laser)
        workload.end_session(cnc)
    workload.start_session(laser, lab.member("ada"))  # it still works afterwards
    workload.end_session(laser)
    lab.settle_and_check()


# -- server kill -9 during ingest --------------------------------------------------------------


@pytest.mark.parametrize("engine", [full_only("sqlite"), "postgres"])
def test_server_kill9_during_ingest(fault_lab_factory: LabFactory, engine: str) -> None:
    """kill -9 of the server process while events stream in; restarted after a pause."""
    lab = fault_lab_factory(engine)
    controllers = [lab.add_controller(MACHINES[0]), lab.add_controller(MACHINES[1])]
    lab.wait_snapshots()
    rng = random.Random(11)
    with Floor(lab, controllers, seed=3):
        for _ in range(int(scale(2, 12))):
            time.sleep(rng.uniform(1.0, 4.0))
            lab.server.kill9()
            lab.workload.note("kill9_server")
            time.sleep(rng.uniform(0.0, 3.0))
            lab.server.start()
            lab.workload.note("restart_server")
        time.sleep(2)
    lab.settle_and_check(timeout=90)


# -- broker faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "persistence"),
    [("sqlite", True), full_only("sqlite", False), full_only("postgres", True),
     full_only("postgres", False)],
)  # fmt: skip
def test_broker_down_while_sessions_go_on(
    fault_lab_factory: LabFactory, engine: str, persistence: bool
) -> None:
    """The broker is down (tens of seconds in CI, minutes in full) while members work."""
    lab = fault_lab_factory(engine, persistence=persistence)
    controllers = [lab.add_controller(MACHINES[0]), lab.add_controller(MACHINES[1])]
    lab.wait_snapshots()
    with Floor(lab, controllers, seed=5):
        time.sleep(2)
        lab.broker.stop()
        lab.workload.note("broker_stopped")
        time.sleep(scale(10, 150))
        lab.broker.start()
        lab.workload.note("broker_started")
        time.sleep(3)
    lab.settle_and_check(timeout=90)


@pytest.mark.parametrize(
    ("engine", "persistence"),
    [full_only("sqlite", True), ("sqlite", False), full_only("postgres", True)],
)
def test_broker_kill9_repeatedly(
    fault_lab_factory: LabFactory, engine: str, persistence: bool
) -> None:
    """kill -9 of Mosquitto (with and without persistence) while events flow, repeatedly."""
    lab = fault_lab_factory(engine, persistence=persistence)
    controllers = [lab.add_controller(MACHINES[0]), lab.add_controller(MACHINES[1])]
    lab.wait_snapshots()
    rng = random.Random(13)
    with Floor(lab, controllers, seed=9):
        for _ in range(int(scale(1, 10))):
            time.sleep(rng.uniform(1.0, 4.0))
            kill9_broker(lab.broker)
            lab.workload.note("kill9_broker")
            time.sleep(rng.uniform(0.5, 3.0))
            lab.broker.start()
            lab.workload.note("broker_started")
        time.sleep(2)
    lab.settle_and_check(timeout=90)
