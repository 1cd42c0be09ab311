"""Hostile input on every topic the server subscribes to, while members work.

Garbage, out-of-range values, replayed and reordered genuine events, and events that
collide with genuine ones (same seq, same session id, same event id), from a fixed
corpus and from hypothesis, published with paho by an anonymous client of the test
broker: what anyone holding a controller's credentials could publish on its topics.
Afterwards the genuine sessions must be exactly as the workload performed them, no
genuine seq acked that the server holds under another event, the server alive.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    EventKind,
    auth_request_topic,
    events_topic,
    status_topic,
)
from tests.faults.conftest import MACHINES, FaultLab, LabFactory, full_only, scale
from tests.faults.harness import FORGED_PREFIX, ControllerProcess, wait_for
from tests.faults.test_process_faults import Floor
from tests.protocol.strategies import events


class HostilePublisher:
    """An anonymous MQTT client publishing forged payloads; remembers what it forged."""

    def __init__(self, lab: FaultLab) -> None:
        self.lab = lab
        self.session_ids: set[str] = set()
        self.published = 0
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"hostile-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self._client.connect(lab.broker.host, lab.broker.port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.lab.tap.forged.add(payload)
        self._remember_session(payload)
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)
        self.published += 1

    def _remember_session(self, payload: bytes) -> None:
        try:
            data = json.loads(payload).get("data")
            session_id = data.get("session_id") if isinstance(data, dict) else None
        except (ValueError, AttributeError, UnicodeDecodeError):
            return
        if isinstance(session_id, str):
            self.session_ids.add(session_id)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def forged_event(
    controller_id: str,
    kind: str,
    data: dict[str, Any],
    *,
    outbox_id: str | None = None,
    seq: int = 1,
    wall_time: float | None = None,
    event_id: str | None = None,
    **overrides: Any,
) -> bytes:
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id or uuid.uuid4().hex,
        "controller_id": controller_id,
        "outbox_id": outbox_id or f"{FORGED_PREFIX}-{uuid.uuid4().hex[:12]}",
        "seq": seq,
        "boot_id": "forged-boot",
        "wall_time": time.time() if wall_time is None else wall_time,
        "mono_time": 1.0,
        "kind": kind,
        "data": data,
        **overrides,
    }
    return json.dumps(body).encode()


def fixed_corpus(site: str) -> list[tuple[str, bytes]]:
    """Garbage and out-of-range payloads on every subscribed topic of every machine."""
    corpus: list[tuple[str, bytes]] = []
    laser, cnc = MACHINES[0], MACHINES[1]
    for spec in (laser, cnc):
        events_at = events_topic(site, spec.machine_id)
        status_at = status_topic(site, spec.machine_id)
        auth_at = auth_request_topic(site, spec.machine_id)
        ctrl = spec.controller_id
        session = f"{FORGED_PREFIX}-s-{uuid.uuid4().hex[:8]}"
        for topic in (events_at, status_at, auth_at):
            corpus += [
                (topic, b""),
                (topic, b"\x00\xff\xfe garbage"),
                (topic, b"not json at all"),
                (topic, b"[1, 2, 3]"),
                (topic, b'"a string"'),
                (topic, b"{" * 5000),
                (topic, json.dumps({"x": "y" * 200_000}).encode()),
                (topic, b'{"schema_version": 99}'),
            ]
        corpus += [
            (events_at, forged_event(ctrl, "session_started", {"session_id": session})),
            (events_at, forged_event(ctrl, "no_such_kind", {})),
            (events_at, forged_event(ctrl, "busy_started", {}, seq=0)),
            (events_at, forged_event(ctrl, "busy_started", {}, seq=-5)),
            (events_at, forged_event(ctrl, "busy_started", {}, seq=2**31)),
            (events_at, forged_event(ctrl, "busy_started", {}, seq=2**63)),
            (events_at, forged_event(ctrl, "busy_started", {}, seq=2**64 + 1)),
            (events_at, forged_event(ctrl, "busy_started", {}, seq="7")),
            (events_at, forged_event(ctrl, "busy_started", {}, wall_time=1e308)),
            (events_at, forged_event(ctrl, "busy_started", {}, wall_time=-1.0)),
            (events_at, b'{"seq": 1, "controller_id": "%s", "outbox_id": "%s-nan",'
             b' "wall_time": NaN}' % (ctrl.encode(), FORGED_PREFIX.encode())),
            (events_at, forged_event("no-such-controller", "busy_started", {})),
            (events_at, forged_event(cnc.controller_id if spec is laser else laser.controller_id,
                                     "busy_started", {})),
            (events_at, forged_event(ctrl, "session_heartbeat", {
                "session_id": session, "elapsed_seconds": 1e308, "busy_seconds": 1e308})),
            (events_at, forged_event(ctrl, "session_started", {
                "session_id": f"{session}-future", "badge_uid": "04A1B2C3", "member_id": "ada",
                "level": "autonomous", "snapshot_version": 1}, wall_time=time.time() + 1e11)),
            (status_at, json.dumps({"schema_version": 1, "controller_id": ctrl, "state": "offline",
                                    "firmware_version": "x", "boot_id": "forged",
                                    "wall_time": 1.0}).encode()),
            (status_at, json.dumps({"schema_version": 1, "controller_id": "no-such",
                                    "state": "online", "firmware_version": "x",
                                    "boot_id": "forged", "wall_time": 1.0}).encode()),
            (auth_at, json.dumps({"schema_version": 1, "request_id": "r1", "controller_id": ctrl,
                                  "badge_uid": "zz-not-hex", "wall_time": 1.0}).encode()),
        ]  # fmt: skip
    corpus += [
        (f"fablab/v1/{site}/laser/events/extra", b"{}"),
        (f"fablab/v1/{site}/../events", b"{}"),
        (f"fablab/v1/{site}/nowhere/events", forged_event("ctrl-laser", "busy_started", {})),
    ]
    return corpus


def replay_genuine(hostile: HostilePublisher, lab: FaultLab, rng: random.Random) -> int:
    """Every genuine event seen so far, again, shuffled (replayed and reordered)."""
    genuine = list(lab.tap.genuine_raw)
    rng.shuffle(genuine)
    for topic, payload in genuine:
        lab.tap.forged.discard(payload)  # the same bytes as a genuine event
        hostile._client.publish(topic, payload, qos=1).wait_for_publish(10)
    return len(genuine)


def _forged_stream_events(lab: FaultLab) -> st.SearchStrategy[tuple[str, bytes]]:
    machines = [(m.machine_id, m.controller_id) for m in MACHINES[:2]]

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes]:
        machine, controller = draw(st.sampled_from(machines))
        # Not oops_reported: a machine's own credentials may put it out of service (that
        # is what the oops button does), which would rightly stop the workload's sessions.
        kind = draw(st.sampled_from([k for k in EventKind if k is not EventKind.OOPS_REPORTED]))
        event = draw(events(kind))
        event = replace(
            event, controller_id=controller,
            outbox_id=f"{FORGED_PREFIX}-{draw(st.integers(0, 5))}",
            seq=draw(st.integers(1, 50)),
        )  # fmt: skip
        topic = draw(st.sampled_from([events_topic(lab.site, machine),
                                      status_topic(lab.site, machine),
                                      auth_request_topic(lab.site, machine)]))
        payload = event.encode()
        mutation = draw(st.sampled_from(["none", "truncate", "flip", "json"]))
        if mutation == "truncate":
            payload = payload[: draw(st.integers(0, len(payload)))]
        elif mutation == "flip":
            i = draw(st.integers(0, len(payload) - 1))
            payload = payload[:i] + bytes([payload[i] ^ 0xFF]) + payload[i + 1 :]
        elif mutation == "json":
            body = json.loads(payload)
            key = draw(st.sampled_from(sorted(body)))
            body[key] = draw(st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(),
                                       st.floats(), st.lists(st.integers(), max_size=3)))
            payload = json.dumps(body).encode()
        return topic, payload

    return build()


@pytest.mark.parametrize("engine", ["sqlite", full_only("postgres")])
def test_hostile_corpus_replays_and_fuzz(fault_lab_factory: LabFactory, engine: str) -> None:
    """Garbage, out-of-range, replayed and reordered events (corpus + hypothesis) on all topics."""
    lab = fault_lab_factory(engine)
    controllers = [lab.add_controller(MACHINES[0]), lab.add_controller(MACHINES[1])]
    lab.wait_snapshots()
    hostile = HostilePublisher(lab)
    rng = random.Random(17)
    try:
        with Floor(lab, controllers, seed=21):
            time.sleep(2)
            for topic, payload in fixed_corpus(lab.site):
                hostile.publish(topic, payload)
            replay_genuine(hostile, lab, rng)

            @settings(max_examples=int(scale(100, 2000)), deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(_forged_stream_events(lab))
            def publish_one(message: tuple[str, bytes]) -> None:
                hostile.publish(*message)

            publish_one()
            replay_genuine(hostile, lab, rng)
            time.sleep(2)
        lab.settle_and_check(timeout=90, forged_sessions=hostile.session_ids)
    finally:
        hostile.close()


def _wait_recorded(lab: FaultLab, session_id: str | None) -> None:
    from tests.faults.harness import db_sessions

    wait_for(
        lambda: any(r["id"] == session_id and r["end"] for r in db_sessions(lab.engine, ["laser"])),
        30, f"session {session_id} recorded and ended",
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["sqlite", full_only("postgres")])
def test_forged_seq_on_a_controller_stream(fault_lab_factory: LabFactory, engine: str) -> None:
    """A forged event takes a seq the controller will use next, on its own outbox stream."""
    lab = fault_lab_factory(engine)
    laser: ControllerProcess = lab.add_controller(MACHINES[0])
    lab.wait_snapshots()
    workload = lab.workload
    workload.start_session(laser, lab.member("ada"))
    workload.end_session(laser)
    wait_for(lambda: laser.status()["pending"] == 0, 30, "outbox drained")
    status = laser.status()
    hostile = HostilePublisher(lab)
    try:
        for ahead in (1, 2, 3):  # the next seqs: session_started, busy, …
            hostile.publish(
                events_topic(lab.site, "laser"),
                forged_event("ctrl-laser", "busy_ended", {}, outbox_id=status["outbox_id"],
                             seq=status["last_seq"] + ahead),
            )  # fmt: skip
        time.sleep(1)
        workload.start_session(laser, lab.member("bob"))
        workload.busy(laser, on=True)
        workload.busy(laser, on=False)
        workload.end_session(laser)
        lab.settle_and_check(timeout=60, forged_sessions=hostile.session_ids)
    finally:
        hostile.close()


@pytest.mark.parametrize("engine", ["sqlite", full_only("postgres")])
def test_forged_session_from_another_controller(
    fault_lab_factory: LabFactory, engine: str
) -> None:
    """Controller B's identity names a session of machine A (start and end), after the fact."""
    lab = fault_lab_factory(engine)
    laser = lab.add_controller(MACHINES[0])
    lab.add_controller(MACHINES[1])
    lab.wait_snapshots()
    truth = lab.workload.start_session(laser, lab.member("ada"))
    lab.workload.end_session(laser)
    _wait_recorded(lab, truth.session_id)
    hostile = HostilePublisher(lab)
    try:
        outbox = f"{FORGED_PREFIX}-{uuid.uuid4().hex[:8]}"
        cnc_events = events_topic(lab.site, "cnc")
        hostile.publish(cnc_events, forged_event(
            "ctrl-cnc", EventKind.SESSION_STARTED.value,
            {"session_id": truth.session_id, "badge_uid": "04FFEE01", "member_id": "nora",
             "level": "trainer", "snapshot_version": 1},
            outbox_id=outbox, seq=1, wall_time=truth.start - 3600,
        ))  # fmt: skip
        hostile.publish(cnc_events, forged_event(
            "ctrl-cnc", EventKind.SESSION_ENDED.value,
            {"session_id": truth.session_id, "reason": "badge", "elapsed_seconds": 36000.0,
             "busy_seconds": 36000.0},
            outbox_id=outbox, seq=2, wall_time=truth.start + 36000,
        ))  # fmt: skip
        hostile.session_ids.discard(truth.session_id or "")  # it is a genuine session
        time.sleep(2)
        lab.settle_and_check(timeout=60, forged_sessions=hostile.session_ids)
    finally:
        hostile.close()
