"""Fixtures for the controller's tests (helpers live in pi_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import (
    FakeClock,
    FakeLink,
    Rig,
    lab_snapshot,
    make_config,
    make_snapshot,
    signed_config,
)

from firmware_pi.config import ControllerConfig
from protocol import PermissionSnapshot


@pytest.fixture
def pin_factory() -> MockFactory:
    """Fresh mock GPIO pins for each test."""
    return MockFactory()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_link() -> FakeLink:
    return FakeLink()


@pytest.fixture
def controller_config(tmp_path: Path) -> ControllerConfig:
    return make_config(tmp_path / "data")


@pytest.fixture
def stored_snapshot(controller_config: ControllerConfig) -> PermissionSnapshot:
    """A valid signed snapshot already on disk, as if received before a restart."""
    snapshot = make_snapshot()
    controller_config.data_dir.mkdir(parents=True, exist_ok=True)
    controller_config.snapshot_path.write_bytes(signed_config(snapshot))
    return snapshot


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(snapshot: PermissionSnapshot | None = None, **options: Any) -> Rig:
        r = Rig(tmp_path / "data", snapshot=snapshot if snapshot is not None else lab_snapshot(),
                **options)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()
