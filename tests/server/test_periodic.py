"""Periodic workers: one server process at a time runs each of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from server.adapters.db import exclusive_run, make_engine
from server.service_layer.periodic import ExclusiveRun, PeriodicWorker


class _CountingWorker(PeriodicWorker):
    name = "counting"

    def __init__(self, exclusive: ExclusiveRun | None) -> None:
        super().__init__(period_s=3600, first_delay_s=3600, exclusive=exclusive)
        self.runs = 0

    def run_once(self) -> int:
        self.runs += 1
        return self.runs


def _held_elsewhere(_name: str) -> AbstractContextManager[bool]:
    @contextmanager
    def block() -> Iterator[bool]:
        yield False

    return block()


def test_periodic_worker_skips_a_run_while_another_process_holds_its_lock() -> None:
    worker = _CountingWorker(_held_elsewhere)
    worker._run_exclusively()
    assert (worker.runs, worker.skipped) == (0, 1)


def test_periodic_worker_runs_when_it_gets_its_lock() -> None:
    worker = _CountingWorker(None)
    worker._run_exclusively()
    assert (worker.runs, worker.skipped) == (1, 0)


@pytest.mark.postgres
def test_exclusive_run_lets_one_postgres_connection_hold_a_name(
    fresh_postgres_url: str,
) -> None:
    first, second = make_engine(fresh_postgres_url), make_engine(fresh_postgres_url)
    try:
        with exclusive_run(first)("refresh") as held:
            assert held
            with exclusive_run(second)("refresh") as other:
                assert not other
            with exclusive_run(second)("retention") as unrelated:
                assert unrelated
        with exclusive_run(second)("refresh") as after_release:
            assert after_release
    finally:
        first.dispose()
        second.dispose()
