"""protocol.events: Event, Ack, ControllerStatus round trips and decode errors."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    Ack,
    ControllerState,
    ControllerStatus,
    Event,
    EventEnvelope,
    EventKind,
    ProtocolError,
    validate_event_data,
)
from protocol._fields import MAX_PAYLOAD_BYTES
from protocol.events import _DATA_SCHEMA
from tests.protocol.strategies import acks, event_data, events, statuses


def _event_dict(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "0b9e3c1e-6f0e-4c55-9d2a-6a1f1f0c2f11",
        "controller_id": "ctl-laser-1",
        "outbox_id": "ob-1",
        "seq": 7,
        "boot_id": "boot-1",
        "wall_time": 1_760_000_000.5,
        "mono_time": 1234.25,
        "kind": "badge_denied",
        "data": {"badge_uid": "04A1B2C3", "reason": "not_trained"},
    }
    body.update(overrides)
    return body


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _decode_error(payload: bytes | str, decoder: Any = Event.decode) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        decoder(payload)
    return err.value


# -- round trips -------------------------------------------------------------------------


@given(events())
def test_event_encode_decode_round_trips(event: Event) -> None:
    assert Event.decode(event.encode()) == event


@pytest.mark.parametrize("kind", list(EventKind))
@given(data=st.data())
def test_event_round_trips_for_every_kind(kind: EventKind, data: st.DataObject) -> None:
    event = data.draw(events(kind))
    decoded = Event.decode(event.encode())
    assert decoded == event
    assert decoded.kind is kind


@given(events())
def test_event_decode_accepts_str_payloads(event: Event) -> None:
    assert Event.decode(event.encode().decode()) == event


@given(acks)
def test_ack_encode_decode_round_trips(ack: Ack) -> None:
    assert Ack.decode(ack.encode()) == ack


@given(statuses)
def test_controller_status_encode_decode_round_trips(status: ControllerStatus) -> None:
    assert ControllerStatus.decode(status.encode()) == status


def test_every_event_kind_has_a_data_schema() -> None:
    assert set(_DATA_SCHEMA) == set(EventKind)


# -- decode errors name the field ------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["schema_version", "event_id", "controller_id", "outbox_id", "seq", "boot_id",
     "wall_time", "mono_time", "kind", "data"],
)  # fmt: skip
def test_event_decode_missing_field_is_named(field: str) -> None:
    body = _event_dict()
    del body[field]
    err = _decode_error(_encode(body))
    assert err.field == field
    assert "required" in err.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 12),
        ("event_id", ""),
        ("controller_id", None),
        ("seq", "7"),
        ("seq", 7.0),
        ("seq", True),
        ("seq", 0),
        ("wall_time", "now"),
        ("wall_time", -1),
        ("mono_time", False),
        ("data", []),
        ("kind", 3),
        ("event_id", "x" * 65),
    ],
)
def test_event_decode_wrong_type_is_named(field: str, value: Any) -> None:
    assert _decode_error(_encode(_event_dict(**{field: value}))).field == field


def test_event_decode_non_finite_time_is_refused() -> None:
    payload = _encode(_event_dict()).replace(b"1234.25", b"NaN")
    assert _decode_error(payload).field == "mono_time"


def test_event_decode_unknown_kind_is_named() -> None:
    err = _decode_error(_encode(_event_dict(kind="teleported")))
    assert err.field == "kind"
    assert "badge_denied" in err.message  # lists the allowed kinds


def test_event_decode_unknown_data_field_is_named() -> None:
    data = {"badge_uid": "04A1B2C3", "reason": "not_trained", "colour": "red"}
    err = _decode_error(_encode(_event_dict(data=data)))
    assert err.field == "data.colour"


def test_event_decode_missing_data_field_is_named() -> None:
    err = _decode_error(_encode(_event_dict(data={"reason": "not_trained"})))
    assert err.field == "data.badge_uid"


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        ("badge_denied", {"badge_uid": "04", "reason": "because"}, "data.reason"),
        ("session_started", {"session_id": "s", "badge_uid": "04", "member_id": "m",
                             "level": "god", "snapshot_version": 1}, "data.level"),
        ("session_started", {"session_id": "s", "badge_uid": "04", "member_id": "m",
                             "level": "trainer", "snapshot_version": "1"},
         "data.snapshot_version"),
        ("session_heartbeat", {"session_id": "s", "elapsed_seconds": "1",
                               "busy_seconds": 0}, "data.elapsed_seconds"),
        ("session_ended", {"session_id": "s", "reason": "badge", "elapsed_seconds": 1,
                           "busy_seconds": 0, "ended_wall_time": "x"}, "data.ended_wall_time"),
        ("fault", {"code": "relay", "message": 5}, "data.message"),
    ],
)  # fmt: skip
def test_event_decode_wrong_data_type_is_named(kind: str, data: Any, field: str) -> None:
    assert _decode_error(_encode(_event_dict(kind=kind, data=data))).field == field


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_event_decode_bad_schema_version_is_named(version: Any) -> None:
    assert _decode_error(_encode(_event_dict(schema_version=version))).field == "schema_version"


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b'{"seq": 1', b"\xff\xfe{}", "{'single': 'quotes'}"],
)
def test_event_decode_non_json_is_refused(payload: bytes | str) -> None:
    assert _decode_error(payload).field == "event"


@pytest.mark.parametrize("payload", [b"[]", b"[1, 2]", b'"event"', b"42", b"null", b"true"])
def test_event_decode_non_object_is_refused(payload: bytes) -> None:
    err = _decode_error(payload)
    assert err.field == "event"
    assert "object" in err.message


def test_event_decode_oversized_payload_is_refused() -> None:
    body = _event_dict(data={"code": "x", "message": "m" * MAX_PAYLOAD_BYTES}, kind="fault")
    err = _decode_error(_encode(body))
    assert err.field == "event"
    assert "larger" in err.message


def test_event_decode_deeply_nested_json_is_a_protocol_error() -> None:
    # A garbage payload well under the size limit must not escape as RecursionError.
    assert _decode_error(b"[" * 100_000).field == "event"
    assert _decode_error(b'{"a":' * 50_000).field == "event"


def test_event_decode_lone_surrogate_is_a_protocol_error() -> None:
    # JSON may escape a lone UTF-16 surrogate; such a string cannot be re-encoded (stored,
    # signed, forwarded) as UTF-8, so it is refused at the door.
    payload = _encode(_event_dict(event_id="\ud800"))
    assert b"\\ud800" in payload
    assert _decode_error(payload).field == "event"


def test_event_decode_lone_surrogate_in_upper_case_escape_is_a_protocol_error() -> None:
    payload = _encode(_event_dict(event_id="\ud800")).replace(b"\\ud800", b"\\uD800")
    assert b"\\uD800" in payload
    assert _decode_error(payload).field == "event"


def test_event_decode_keeps_a_valid_surrogate_pair() -> None:
    event = Event.decode(_encode(_event_dict(event_id="laser \U0001f525")))
    assert event.event_id == "laser \U0001f525"


@given(kind=st.sampled_from(list(EventKind)), data=st.data())
def test_validate_event_data_drops_null_optionals(kind: EventKind, data: st.DataObject) -> None:
    clean = data.draw(event_data(kind))
    optional = [n for n, (_t, required) in _DATA_SCHEMA[kind].items() if not required]
    with_nulls = {**clean, **{name: None for name in optional if name not in clean}}
    assert validate_event_data(kind, with_nulls) == clean


# -- Ack and ControllerStatus ------------------------------------------------------------


def _ack_dict(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "controller_id": "ctl-laser-1",
        "outbox_id": "ob-1",
        "up_to_seq": 12,
        "rejected": [9],
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rejected", [0]),
        ("rejected", ["3"]),
        ("rejected", [True]),
        ("rejected", 3),
        ("conflicts", [0]),
        ("conflicts", ["3"]),
        ("conflicts", 3),
        ("up_to_seq", -1),
        ("up_to_seq", "12"),
        ("outbox_id", ""),
        ("schema_version", 9),
    ],
)
def test_ack_decode_bad_field_is_named(field: str, value: Any) -> None:
    assert _decode_error(_encode(_ack_dict(**{field: value})), Ack.decode).field == field


def test_ack_decode_up_to_zero_means_nothing_committed() -> None:
    assert Ack.decode(_encode(_ack_dict(up_to_seq=0, rejected=[]))).up_to_seq == 0


def test_ack_decode_without_conflicts_means_none() -> None:
    assert Ack.decode(_encode(_ack_dict())).conflicts == ()


def test_ack_decode_reads_conflicts() -> None:
    assert Ack.decode(_encode(_ack_dict(conflicts=[13, 14]))).conflicts == (13, 14)


def test_ack_decode_non_object_names_the_payload() -> None:
    assert _decode_error(b"[]", Ack.decode).field == "ack"


def test_controller_status_decode_bad_state_is_named() -> None:
    body = {
        "schema_version": 1,
        "controller_id": "ctl-laser-1",
        "state": "asleep",
        "firmware_version": "0.1.0",
        "boot_id": "boot-1",
        "wall_time": 1.0,
    }
    assert _decode_error(_encode(body), ControllerStatus.decode).field == "state"
    body["state"] = ControllerState.OFFLINE.value
    del body["boot_id"]
    assert _decode_error(_encode(body), ControllerStatus.decode).field == "boot_id"
    assert _decode_error(b"nope", ControllerStatus.decode).field == "status"


# -- EventEnvelope.peek --------------------------------------------------------------------


@given(events())
def test_event_envelope_peek_reads_a_valid_event(event: Event) -> None:
    assert EventEnvelope.peek(event.encode()) == EventEnvelope(
        event.controller_id, event.outbox_id, event.seq, event.event_id
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"kind": "teleported"},
        {"data": {"bogus": 1}},
        {"schema_version": 99},
        {"wall_time": "yesterday"},
        {"event_id": None},
    ],
)
def test_event_envelope_peek_reads_an_invalid_body(overrides: dict[str, Any]) -> None:
    payload = _encode(_event_dict(**overrides))
    with pytest.raises(ProtocolError):
        Event.decode(payload)
    envelope = EventEnvelope.peek(payload)
    assert envelope is not None
    assert (envelope.controller_id, envelope.outbox_id, envelope.seq) == ("ctl-laser-1", "ob-1", 7)
    assert envelope.event_id == _event_dict(**overrides)["event_id"]


@pytest.mark.parametrize(
    "payload",
    [
        b"garbage",
        b"[]",
        b"[" * 100_000,
        _encode(_event_dict(seq=0)),
        _encode(_event_dict(seq="7")),
        _encode({k: v for k, v in _event_dict().items() if k != "outbox_id"}),
        _encode(_event_dict(controller_id="")),
    ],
)
def test_event_envelope_peek_returns_none_when_unreadable(payload: bytes) -> None:
    assert EventEnvelope.peek(payload) is None


# Values at and past the bounds of each field type, and values of the wrong type.
_EDGES: list[object] = [
    None, True, False, 0, -1, 1, 2**63 - 1, 2**63, 0.0, -0.0, 1.0, -1.5, math.inf, math.nan,
    4_102_444_800.0, 4_102_444_800.5, 366 * 86400.0, 366 * 86400.0 + 1, 1e10, 1e10 + 1,
    "", "x" * 64, "x" * 65, "x" * 500, "x" * 501, "session_started", "badge",
    "not_trained", "autonomous", [], {},
]  # fmt: skip


def _decoded(decode: Callable[[], Event]) -> object:
    """An event's fields with their types, or the error's text."""
    try:
        event = decode()
    except ProtocolError as exc:
        return str(exc)
    fields = [(type(v), v) for v in dataclasses.astuple(event)]
    return fields, [(k, type(v), v) for k, v in event.data.items()]


def _full_event(kind: EventKind) -> dict[str, Any]:
    """A valid event of this kind with every data field set, as a JSON object."""
    plain = {str: "x", int: 1, float: 1.0, bool: True}
    data = {
        name: plain[of] if of in plain else next(iter(of)).value
        for name, (of, _) in _DATA_SCHEMA[kind].items()
    }
    return _event_dict(kind=kind.value, data=data)


def test_event_decode_fast_path_matches_field_readers() -> None:
    """Decoding gives what the field-by-field readers give (value and type), or the
    same error, whatever one field (top level or data, or an unknown one) is set to."""
    for kind in EventKind:
        body = _full_event(kind)
        places = [(name, False) for name in [*body, "unknown"]]
        places += [(name, True) for name in [*body["data"], "unknown"]]
        for (name, in_data), value in itertools.product(places, _EDGES):
            changed = copy.deepcopy(body)
            (changed["data"] if in_data else changed)[name] = value
            payload = json.dumps(changed)
            assert _decoded(lambda p=payload: Event.decode(p)) == _decoded(
                lambda p=payload: Event.read_fields(json.loads(p))
            ), (kind, name, value)


@given(events())
def test_event_decode_fast_path_matches_field_readers_on_valid_events(event: Event) -> None:
    payload = event.encode()
    assert _decoded(lambda: Event.decode(payload)) == _decoded(
        lambda: Event.read_fields(json.loads(payload))
    )
