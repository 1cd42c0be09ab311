"""protocol.events: values out of any plausible range are refused when decoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import Ack, Event, EventEnvelope, ProtocolError


def _event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e-1",
        "controller_id": "ctl-laser-1",
        "outbox_id": "ob-1",
        "seq": 7,
        "boot_id": "boot-1",
        "wall_time": 1_760_000_000.5,
        "mono_time": 1234.25,
        "kind": "session_heartbeat",
        "data": {"session_id": "s1", "elapsed_seconds": 60.0, "busy_seconds": 10.0},
    }
    body.update(overrides)
    return body


def _error(body: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        Event.decode(json.dumps(body).encode())
    return err.value


def test_event_seq_beyond_63_bits_is_refused() -> None:
    assert _error(_event(seq=2**63)).field == "seq"


def test_event_seq_at_the_63_bit_limit_is_accepted() -> None:
    assert Event.decode(json.dumps(_event(seq=2**63 - 1))).seq == 2**63 - 1


def test_event_envelope_with_seq_beyond_63_bits_is_unreadable() -> None:
    assert EventEnvelope.peek(json.dumps(_event(seq=2**63))) is None


def test_event_envelope_reason_names_the_seq() -> None:
    with pytest.raises(ProtocolError) as err:
        EventEnvelope.read(json.dumps(_event(seq=2**64)))
    assert err.value.field == "seq"


def test_event_elapsed_seconds_of_1e308_is_refused() -> None:
    data = {"session_id": "s1", "elapsed_seconds": 1e308, "busy_seconds": 0.0}
    assert _error(_event(data=data)).field == "data.elapsed_seconds"


def test_event_busy_seconds_over_a_year_is_refused() -> None:
    data = {"session_id": "s1", "elapsed_seconds": 1.0, "busy_seconds": 400 * 86400.0}
    assert _error(_event(data=data)).field == "data.busy_seconds"


def test_event_wall_time_thousands_of_years_ahead_is_refused() -> None:
    assert _error(_event(wall_time=3000 * 365 * 86400.0)).field == "wall_time"


def test_event_ended_wall_time_thousands_of_years_ahead_is_refused() -> None:
    data = {
        "session_id": "s1",
        "reason": "controller_restart",
        "elapsed_seconds": 1.0,
        "busy_seconds": 0.0,
        "ended_wall_time": 1e15,
    }
    assert _error(_event(kind="session_ended", data=data)).field == "data.ended_wall_time"


def test_event_snapshot_version_beyond_63_bits_is_refused() -> None:
    data = {
        "session_id": "s1",
        "badge_uid": "04A1B2C3",
        "member_id": "ada",
        "level": "autonomous",
        "snapshot_version": 2**63,
    }
    assert _error(_event(kind="session_started", data=data)).field == "data.snapshot_version"


def test_ack_up_to_seq_beyond_63_bits_is_refused() -> None:
    body = {
        "schema_version": 1,
        "controller_id": "c",
        "outbox_id": "o",
        "up_to_seq": 2**63,
        "rejected": [],
    }
    with pytest.raises(ProtocolError):
        Ack.decode(json.dumps(body))
