"""The simulated card reader."""

from __future__ import annotations

import threading

import pytest

from firmware_pi.reader import SimulatedReader
from protocol import ProtocolError


def test_simulated_reader_returns_normalized_uid() -> None:
    reader = SimulatedReader()
    reader.tap("04:a1:b2:c3")

    assert reader.read(timeout=0.1) == "04A1B2C3"


def test_simulated_reader_returns_none_after_timeout() -> None:
    assert SimulatedReader().read(timeout=0.01) is None


def test_simulated_reader_keeps_tap_order() -> None:
    reader = SimulatedReader()
    reader.tap("0001")
    reader.tap("0002")

    assert [reader.read(0.1), reader.read(0.1)] == ["0001", "0002"]


def test_simulated_reader_wakes_on_tap_from_another_thread() -> None:
    reader = SimulatedReader()
    threading.Timer(0.05, reader.tap, args=("04A1B2C3",)).start()

    assert reader.read(timeout=2) == "04A1B2C3"


def test_simulated_reader_refuses_malformed_uid() -> None:
    with pytest.raises(ProtocolError):
        SimulatedReader().tap("hello")


def test_simulated_reader_reads_nothing_after_close() -> None:
    reader = SimulatedReader()
    reader.tap("04A1B2C3")
    reader.close()

    assert reader.read(timeout=0.01) is None
