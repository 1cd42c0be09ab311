"""Fault-suite fixtures: a whole lab of real processes per scenario, and the results table.

Every test here is marked ``faults``. Without ``FABLAB_FAULTS_FULL=1`` only the bounded
CI set runs (short outages, few cycles, one database engine per scenario); the full set::

    FABLAB_FAULTS_FULL=1 scripts/test -m faults tests/faults

After a run with ``-m faults``, the table of scenarios and results in docs/reliability.md
is updated (between its markers) with the results of the scenarios that ran.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.faults.harness import (
    BrokerTap,
    ControllerProcess,
    MachineSpec,
    MemberSpec,
    ServerProcess,
    Workload,
    assert_no_problems,
    check_acks,
    check_relays,
    check_sessions,
    seed_lab,
    wait_drained,
)
from tests.fixtures import MosquittoServer

FULL = os.environ.get("FABLAB_FAULTS_FULL") == "1"
_sites = itertools.count(1)

MACHINES = (
    MachineSpec("laser", "ctrl-laser", "1a" * 32),
    MachineSpec("cnc", "ctrl-cnc", "2b" * 32),
    MachineSpec("printer", "ctrl-printer", "3c" * 32),
)
MEMBERS = (
    MemberSpec("ada", "04A1B2C3", ("laser", "cnc", "printer")),
    MemberSpec("bob", "04B0B0B0", ("laser", "cnc", "printer")),
    MemberSpec("cyd", "04C1C2C3", ("laser", "cnc", "printer")),
    MemberSpec("nora", "04FFEE01", ()),  # trained on nothing
)


def scale(ci: float, full: float) -> float:
    """A duration or count: short in CI, long with FABLAB_FAULTS_FULL=1."""
    return full if FULL else ci


def full_only(*values: Any) -> Any:
    """A parameter set that runs only with FABLAB_FAULTS_FULL=1."""
    return pytest.param(
        *values,
        marks=pytest.mark.skipif(not FULL, reason="full fault suite: FABLAB_FAULTS_FULL=1"),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            if "fault_lab_factory" in getattr(item, "fixturenames", ()):
                # Outages of minutes in the full set: past the suite's default timeout.
                item.add_marker(pytest.mark.timeout(1800 if FULL else 300))


@dataclass
class FaultLab:
    """One lab: broker, server process, controller processes, the tap and the workload."""

    site: str
    tmp: Path
    broker: MosquittoServer
    database_url: str
    engine: Engine
    server: ServerProcess
    tap: BrokerTap
    workload: Workload
    controllers: dict[str, ControllerProcess] = field(default_factory=dict)
    members: dict[str, MemberSpec] = field(default_factory=dict)

    def add_controller(
        self, spec: MachineSpec, *, broker_url: str | None = None, **extra: Any
    ) -> ControllerProcess:
        controller = ControllerProcess(
            self.tmp / f"ctrl-{spec.machine_id}", spec, site=self.site,
            broker_url=broker_url or self.broker.url, extra_config=extra,
        )  # fmt: skip
        self.controllers[spec.machine_id] = controller
        controller.start()
        return controller

    def wait_snapshots(self, timeout: float = 30) -> None:
        from tests.faults.harness import wait_for

        for controller in self.controllers.values():
            wait_for(lambda c=controller: c.status()["permissions"] >= 3, timeout,
                     f"snapshot with the trainings on {controller.machine}")

    def member(self, member_id: str) -> MemberSpec:
        return self.members[member_id]

    def settle_and_check(self, timeout: float = 60, forged_sessions: Iterable[str] = ()) -> None:
        """End nothing, wait until every outbox is drained, then run every check."""
        assert not self.workload.open, f"sessions still open: {list(self.workload.open)}"
        problems: list[str] = []
        try:
            wait_drained(self.controllers.values(), timeout)
        except AssertionError as exc:
            problems.append(str(exc))
        machines = [c.machine for c in self.controllers.values()]
        deadline = time.monotonic() + 5
        while True:  # the last commits may trail the acks the controllers saw
            session_problems = check_sessions(
                self.engine, self.workload, machines, forged_sessions
            )
            if not session_problems or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        problems += session_problems
        problems += check_acks(
            self.engine, self.tap, [c.spec.controller_id for c in self.controllers.values()]
        )
        problems += check_relays(self.controllers.values(), self.workload)
        if not self.server.running:
            problems.append(f"the server process died; log:\n{self.server.log_tail()}")
        assert_no_problems(problems)


@pytest.fixture(params=["sqlite", "postgres"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


LabFactory = Callable[..., FaultLab]


@pytest.fixture
def fault_lab_factory(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    mosquitto_factory: Callable[..., MosquittoServer],
) -> Iterator[LabFactory]:
    labs: list[FaultLab] = []

    def make(
        engine: str = "sqlite", *, persistence: bool = True, machines: int = 2
    ) -> FaultLab:
        site = f"faults{next(_sites)}"
        if engine == "sqlite":
            url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
        else:
            url = request.getfixturevalue("fresh_postgres_url")
        specs = MACHINES[:machines]
        seed_lab(url, site, specs, MEMBERS)
        broker = mosquitto_factory(persistence=persistence)
        server = ServerProcess(
            tmp_path / "server", database_url=url, broker_url=broker.url, site=site
        )
        lab = FaultLab(
            site=site, tmp=tmp_path, broker=broker, database_url=url,
            engine=create_engine(url), server=server,
            tap=BrokerTap(broker.host, broker.port, site),
            workload=Workload(tmp_path / "workload.jsonl"),
            members={m.member_id: m for m in MEMBERS},
        )  # fmt: skip
        labs.append(lab)
        # The per-test PostgreSQL database was set up after this fixture, so it would be
        # dropped before this fixture's teardown: stop the lab's processes first.
        request.node.addfinalizer(lambda: _close_lab(lab))
        server.start()
        return lab

    yield make
    for lab in labs:
        _close_lab(lab)


def _close_lab(lab: FaultLab) -> None:
    """Stop every process of the lab (idempotent)."""
    for controller in lab.controllers.values():
        controller.stop()
    lab.server.stop()
    lab.tap.close()
    lab.engine.dispose()
    lab.broker.stop()


# -- the results table in docs/reliability.md --------------------------------------------

_RESULTS: dict[str, tuple[str, str]] = {}
TABLE_BEGIN = "<!-- fault-suite-results:begin -->"
TABLE_END = "<!-- fault-suite-results:end -->"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if "fault_lab_factory" not in getattr(item, "fixturenames", ()):
        return  # not a scenario (the checks' own tests)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            return
        if report.passed:
            result, note = "pass", ""
        else:
            text = str(report.longrepr.reprcrash.message) if hasattr(  # type: ignore[union-attr]
                report.longrepr, "reprcrash") else str(report.longrepr)
            result, note = "FAIL", _first_line(text)
        _RESULTS[item.name] = (result, note)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    interesting = [ln for ln in lines if ln.startswith("- ")]
    chosen = interesting[0][2:] if interesting else (lines[0] if lines else "")
    chosen = re.sub(r"\s+", " ", chosen).replace("|", "/")
    return chosen[:160]


def _scenario_doc(item_name: str, session: pytest.Session) -> str:
    for item in session.items:
        if item.name == item_name:
            doc = (getattr(item, "function", None).__doc__ or "").strip()  # type: ignore[union-attr]
            return doc.splitlines()[0] if doc else item_name
    return item_name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only runs that ask for the fault suite (`-m faults`) write the table: a plain
    # `scripts/test` leaves the working tree as it found it.
    if not _RESULTS or "faults" not in (session.config.option.markexpr or ""):
        return
    path = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
    if not path.exists():
        return
    text = path.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_BEGIN, 1)
    old_table, tail = rest.split(TABLE_END, 1)
    rows: dict[str, str] = {}
    for line in old_table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0]] = line
    today = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mode = "full" if FULL else "CI"
    for name, (result, note) in _RESULTS.items():
        key = f"`{name}`"
        doc = _scenario_doc(name, session).replace("|", "/")
        rows[key] = f"| {key} | {doc} | **{result}** | {today} ({mode}) | {note} |"
    header = (
        "\n| Scenario | What it does | Result | Last run | First problem found |\n"
        "|---|---|---|---|---|\n"
    )
    table = header + "\n".join(rows[k] for k in sorted(rows)) + "\n"
    path.write_text(head + TABLE_BEGIN + table + TABLE_END + tail)
