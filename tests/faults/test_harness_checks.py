"""The fault suite's checks find what they are meant to find (no processes: fast)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from protocol import Ack
from server.adapters.orm import Base, RawEvent, UsageSession
from tests.faults.harness import (
    ControllerProcess,
    MachineSpec,
    TruthSession,
    Workload,
    check_acks,
    check_relays,
    check_sessions,
)

T0 = 1_790_000_000.0


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    Base.metadata.create_all(engine)
    return engine


def _usage(session_id: str, machine: str = "laser", member: str = "ada", **kw: Any) -> UsageSession:
    values: dict[str, Any] = {
        "id": session_id, "machine_id": machine, "controller_id": f"ctrl-{machine}",
        "member_id": member, "reported_member_id": member,
        "started_at": datetime.fromtimestamp(T0, UTC),
        "ended_at": datetime.fromtimestamp(T0 + 60, UTC), "end_reason": "badge",
        "elapsed_seconds": 60.0, "busy_seconds": 0.0,
    }  # fmt: skip
    values.update(kw)
    return UsageSession(**values)


def _workload(tmp_path: Path, **kw: Any) -> Workload:
    workload = Workload(tmp_path / "w.jsonl")
    values: dict[str, Any] = {
        "machine": "laser", "controller_id": "ctrl-laser", "member": "ada", "badge": "04A1B2C3",
        "start": T0, "session_id": "s1", "end": T0 + 60, "end_reason": "badge",
    }  # fmt: skip
    values.update(kw)
    workload.sessions.append(TruthSession(**values))
    return workload


def _store(engine: Engine, *rows: Any) -> None:
    with Session(engine) as db:
        db.add_all(rows)
        db.commit()


def test_check_sessions_accepts_the_truth(engine: Engine, tmp_path: Path) -> None:
    _store(engine, _usage("s1"))
    assert check_sessions(engine, _workload(tmp_path), ["laser"]) == []


@pytest.mark.parametrize(
    ("row", "found"),
    [
        ({"member_id": "nora"}, "recorded for member nora"),
        ({"machine_id": "cnc"}, "recorded for cnc"),
        ({"started_at": datetime.fromtimestamp(T0 + 2, UTC)}, "starts at"),
        ({"ended_at": datetime.fromtimestamp(T0 + 90, UTC)}, "ends at"),
        ({"end_reason": "controller_restart"}, "ended controller_restart"),
        ({"elapsed_seconds": 3600.0}, "elapsed 3600.0 s, truth 60.0 s"),
        ({"busy_seconds": 30.0}, "busy 30.0 s, truth 0.0 s"),
    ],
)
def test_check_sessions_finds_a_bent_session(
    engine: Engine, tmp_path: Path, row: dict[str, Any], found: str
) -> None:
    _store(engine, _usage("s1", **row))
    problems = check_sessions(engine, _workload(tmp_path), ["laser", "cnc"])
    assert any(found in p for p in problems), problems


def test_check_sessions_counts_busy_time_from_the_workload(
    engine: Engine, tmp_path: Path
) -> None:
    _store(engine, _usage("s1", busy_seconds=20.0))
    workload = _workload(tmp_path)
    workload.log += [
        {"kind": "busy", "machine": "laser", "on": True, "at": T0 + 10},
        {"kind": "busy", "machine": "laser", "on": False, "at": T0 + 30},
        {"kind": "busy", "machine": "cnc", "on": True, "at": T0 + 31},
    ]
    assert check_sessions(engine, workload, ["laser"]) == []


def test_check_sessions_finds_a_double_and_a_phantom(engine: Engine, tmp_path: Path) -> None:
    _store(engine, _usage("s1"), _usage("twin"), _usage("ghost", member="bob"))
    problems = check_sessions(engine, _workload(tmp_path), ["laser"])
    assert any("recorded more than once" in p for p in problems), problems
    assert any("ghost" in p and "never performed" in p for p in problems), problems


def test_check_sessions_crash_ends_at_the_last_heartbeat(engine: Engine, tmp_path: Path) -> None:
    _store(engine, _usage("s1", end_reason="controller_restart"))
    too_early_kill = _workload(tmp_path, end_reason="controller_restart", killed_at=T0 + 600)
    problems = check_sessions(engine, too_early_kill, ["laser"])
    assert any("not within one interval before the kill" in p for p in problems), problems


class _Tap:
    def __init__(self, acks: list[Ack], published: dict[tuple[str, str, int], set[str]]) -> None:
        self._acks, self._published = acks, published

    def snapshot(self) -> tuple[list[Ack], dict[tuple[str, str, int], set[str]]]:
        return self._acks, self._published


def _raw(seq: int, event_id: str) -> RawEvent:
    return RawEvent(
        event_id=event_id, controller_id="ctrl-laser", outbox_id="o1", seq=seq, topic="t",
        payload="{}", status="accepted", received_at=datetime.now(UTC),
    )  # fmt: skip


def test_check_acks_finds_an_acked_seq_not_stored(engine: Engine) -> None:
    _store(engine, _raw(1, "e1"))
    tap = _Tap([Ack("ctrl-laser", "o1", 2)], {})
    problems = check_acks(engine, tap, ["ctrl-laser"])  # type: ignore[arg-type]
    assert problems and "seqs [2]" in problems[0]


def test_check_acks_finds_a_seq_held_under_another_event(engine: Engine) -> None:
    _store(engine, _raw(1, "forged"))
    tap = _Tap([Ack("ctrl-laser", "o1", 1)], {("ctrl-laser", "o1", 1): {"genuine"}})
    problems = check_acks(engine, tap, ["ctrl-laser"])  # type: ignore[arg-type]
    assert problems and "instead of the controller's" in problems[0]


def test_check_relays_finds_a_relay_on_without_grant(tmp_path: Path) -> None:
    controller = ControllerProcess(
        tmp_path, MachineSpec("laser", "ctrl-laser", "1a" * 32), site="s",
        broker_url="mqtt://127.0.0.1:1",
    )  # fmt: skip
    records = [
        {"relay": True, "wall": T0, "session_id": "s1", "grant_ok": False},
        {"relay": True, "wall": T0 + 30, "session_id": "nobody", "grant_ok": True},
    ]
    controller.log_path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    problems = check_relays([controller], _workload(tmp_path))
    assert any("without a valid grant" in p for p in problems), problems
    assert any("nobody started" in p for p in problems), problems
