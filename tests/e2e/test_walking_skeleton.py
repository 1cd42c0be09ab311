"""A badge tap goes from a controller over real Mosquitto to the server and back."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from sqlalchemy import func, select

from protocol import Ack, EventKind, ack_topic, events_topic
from server.adapters.orm import BadgeDenial, RawEvent, UsageSession
from tests.e2e.conftest import ADA_BADGE, NORA_BADGE, Lab, wait_until


def _sessions(lab: Lab) -> list[UsageSession]:
    with lab.uow() as uow:
        return list(uow.session.scalars(select(UsageSession).order_by(UsageSession.started_at)))


def _outbox_drained(lab: Lab) -> bool:
    assert lab.controller is not None
    return len(lab.controller.outbox) == 0


def test_skeleton_trained_badge_switches_relay_on_and_records_session(lab: Lab) -> None:
    lab.tap(ADA_BADGE)
    wait_until(lambda: lab.relay_on, what="relay on")
    wait_until(lambda: _sessions(lab), what="session row")
    [usage] = _sessions(lab)
    assert (usage.member_id, usage.machine_id, usage.ended_at) == ("ada", "laser", None)
    wait_until(lambda: _outbox_drained(lab), what="ack of the session start")


def test_skeleton_second_tap_ends_session_and_relay_off(lab: Lab) -> None:
    lab.tap(ADA_BADGE)
    wait_until(lambda: lab.relay_on, what="relay on")
    lab.tap(ADA_BADGE)
    wait_until(lambda: not lab.relay_on, what="relay off")
    wait_until(lambda: _sessions(lab) and _sessions(lab)[0].ended_at, what="session closed")
    assert _sessions(lab)[0].end_reason == "badge"


def test_skeleton_untrained_badge_is_denied_and_relay_stays_off(lab: Lab) -> None:
    lab.tap(NORA_BADGE)

    def denial() -> list[BadgeDenial]:
        with lab.uow() as uow:
            return list(uow.session.scalars(select(BadgeDenial)))

    wait_until(denial, what="denial row")
    assert not lab.relay_on
    [row] = denial()
    assert (row.badge_uid, row.member_id, row.machine_id) == (NORA_BADGE, "nora", "laser")
    assert _sessions(lab) == []


def test_skeleton_server_down_controller_decides_offline_and_nothing_is_lost(lab: Lab) -> None:
    lab.tap(ADA_BADGE)
    wait_until(lambda: lab.relay_on and _sessions(lab), what="first session recorded")
    lab.stop_server()

    lab.tap(ADA_BADGE)  # end, decided while the server is down
    wait_until(lambda: not lab.relay_on, what="relay off offline")
    lab.tap(ADA_BADGE)  # a new session, from the snapshot
    wait_until(lambda: lab.relay_on, what="relay on offline")
    lab.tap(NORA_BADGE)  # refused from the snapshot too
    lab.tap(ADA_BADGE)
    wait_until(lambda: not lab.relay_on, what="second session ended offline")
    assert lab.controller is not None
    produced = lab.controller.outbox.last_seq
    assert len(lab.controller.outbox) > 0, "events must wait in the outbox"

    lab.start_server()
    wait_until(lambda: _outbox_drained(lab), timeout=20, what="outbox drained after restart")
    sessions = _sessions(lab)
    assert len(sessions) == 2
    assert all(s.ended_at is not None and s.member_id == "ada" for s in sessions)
    with lab.uow() as uow:
        seqs = list(uow.session.scalars(select(RawEvent.seq).where(RawEvent.seq.is_not(None))))
        denials = uow.session.scalar(select(func.count()).select_from(BadgeDenial))
    assert sorted(seqs) == list(range(1, produced + 1)), "every event exactly once"
    assert denials == 1


def test_skeleton_invalid_payload_is_counted_acked_as_rejected_and_ingest_goes_on(
    lab: Lab,
) -> None:
    assert lab.server is not None and lab.controller is not None
    acks: list[Ack] = []
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="rogue")
    client.on_message = lambda _c, _u, msg: acks.append(Ack.decode(msg.payload))
    client.connect(lab.broker.host, lab.broker.port)
    client.subscribe(ack_topic(lab.site, "laser"), qos=1)
    client.loop_start()
    try:
        bad = (
            b'{"schema_version":1,"event_id":"x1","controller_id":"laser","outbox_id":"rogue",'
            b'"seq":1,"boot_id":"b","wall_time":1,"mono_time":1,"kind":"session_started",'
            b'"data":{"session_id":"evil","badge_uid":"04FFEE01","member_id":"nora",'
            b'"level":"god","snapshot_version":1}}'
        )
        client.publish(events_topic(lab.site, "laser"), bad, qos=1).wait_for_publish(5)
        wait_until(lambda: any(a.outbox_id == "rogue" for a in acks), what="ack of the bad event")
    finally:
        client.loop_stop()
        client.disconnect()
    rogue = next(a for a in acks if a.outbox_id == "rogue")
    assert (rogue.up_to_seq, rogue.rejected) == (1, (1,))
    assert lab.server.ingest.stats["events_rejected"] == 1
    assert not lab.relay_on
    assert _sessions(lab) == []

    lab.tap(ADA_BADGE)  # ingest still works
    wait_until(lambda: _sessions(lab), what="session after the bad payload")
    assert lab.controller.controller.session is not None
    assert EventKind.SESSION_STARTED.value in {
        raw.kind for raw in _raw_events(lab) if raw.status == "accepted"
    }


def _raw_events(lab: Lab) -> list[RawEvent]:
    with lab.uow() as uow:
        return list(uow.session.scalars(select(RawEvent)))
