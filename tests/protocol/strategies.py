"""Hypothesis strategies producing valid protocol values (events of every kind, snapshots)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from hypothesis import strategies as st

from protocol import (
    Ack,
    ControllerState,
    ControllerStatus,
    Event,
    EventKind,
    Level,
    MachineSettings,
    Mode,
    PermissionEntry,
    PermissionSnapshot,
)
from protocol.events import _DATA_SCHEMA, FLOAT_MAXIMUM

slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
ids = st.text(min_size=1, max_size=64)  # text() never draws lone surrogates
texts = st.text(min_size=1, max_size=80)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=2**53)
seqs = st.integers(min_value=1, max_value=2**53)


def _value_for(kind_of: Any, name: str = "") -> st.SearchStrategy[Any]:
    if kind_of is str:
        return texts
    if kind_of is int:
        return counts
    if kind_of is float and name in FLOAT_MAXIMUM:
        return st.floats(min_value=0, max_value=FLOAT_MAXIMUM[name], allow_nan=False)
    if kind_of is float:
        return times
    if kind_of is bool:
        return st.booleans()
    if isinstance(kind_of, type) and issubclass(kind_of, Enum):
        return st.sampled_from([m.value for m in kind_of])
    raise TypeError(kind_of)


@st.composite
def event_data(draw: st.DrawFn, kind: EventKind) -> dict[str, Any]:
    """A valid `data` object for `kind`: every required field, some optional ones."""
    data: dict[str, Any] = {}
    for name, (kind_of, required) in _DATA_SCHEMA[kind].items():
        if required or draw(st.booleans()):
            data[name] = draw(_value_for(kind_of, name))
    return data


@st.composite
def events(draw: st.DrawFn, kind: EventKind | None = None) -> Event:
    chosen = kind if kind is not None else draw(st.sampled_from(list(EventKind)))
    return Event(
        event_id=draw(ids),
        controller_id=draw(ids),
        outbox_id=draw(ids),
        seq=draw(seqs),
        boot_id=draw(ids),
        wall_time=draw(times),
        mono_time=draw(times),
        kind=chosen,
        data=draw(event_data(chosen)),
    )


acks = st.builds(
    Ack,
    controller_id=ids,
    outbox_id=ids,
    up_to_seq=counts,
    rejected=st.lists(seqs, max_size=5).map(tuple),
    conflicts=st.lists(seqs, max_size=3).map(tuple),
)

statuses = st.builds(
    ControllerStatus,
    controller_id=ids,
    state=st.sampled_from(list(ControllerState)),
    firmware_version=ids,
    boot_id=ids,
    wall_time=times,
)

settings_ = st.builds(
    MachineSettings,
    name=texts,
    mode=st.sampled_from(list(Mode)),
    idle_timeout_s=counts,
    max_duration_s=counts,
    heartbeat_interval_s=st.integers(min_value=1, max_value=3600),
    out_of_service=st.booleans(),
    out_of_service_reason=st.none() | texts,
    plain_badges_allowed=st.booleans(),
)

permission_entries = st.builds(
    PermissionEntry,
    badge_digest=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    member_id=ids,
    level=st.sampled_from(list(Level)),
    expires_at=st.none() | counts,
    protected=st.booleans(),
)

snapshots = st.builds(
    PermissionSnapshot,
    site=slugs,
    machine=slugs,
    controller_id=ids,
    version=seqs,
    issued_at=counts,
    settings=settings_,
    permissions=st.lists(permission_entries, max_size=6, unique_by=lambda p: p.badge_digest).map(
        tuple
    ),
)
