"""What the server sends controllers beyond configs: commands, auth answers, staff."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import event as sa_event

from protocol import (
    AuthRequest,
    CommandKind,
    ControllerState,
    ControllerStatus,
    EventKind,
    Level,
    StaffRole,
    auth_request_topic,
    auth_response_topic,
    badge_digest,
    command_topic,
    config_topic,
    status_topic,
    verify_auth_response,
    verify_command,
    verify_config,
)
from server.bootstrap import ServerRuntime
from server.domain.access import Principal, Role
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from tests.server.conftest import KEY_HEX, SITE, EventFactory, Ingest

KEY = bytes.fromhex(KEY_HEX)
MONA = Principal("mona", frozenset({Role.MANAGER}))


def _commands(sent: list[OutgoingMessage]) -> list[CommandKind]:
    topic = command_topic(SITE, "laser")
    return [verify_command(m.payload, KEY, now=time.time()).kind for m in sent if m.topic == topic]


def _snapshot(sent: list[OutgoingMessage]):  # type: ignore[no-untyped-def]
    config = [m for m in sent if m.topic == config_topic(SITE, "laser")][-1]
    return verify_config(config.payload, KEY)


def _ask(lab: ServerRuntime, sent: list[OutgoingMessage], uid: str):  # type: ignore[no-untyped-def]
    request = AuthRequest(uuid.uuid4().hex, "laser", uid, time.time(), snapshot_version=None)
    lab.bus.handle(cmds.AnswerAuthRequest(auth_request_topic(SITE, "laser"), request.encode()))
    [answer] = [m for m in sent if m.topic == auth_response_topic(SITE, "laser")]
    response = verify_auth_response(answer.payload, KEY)
    assert response.request_id == request.request_id
    return response


def test_link_out_of_service_sends_signed_command_and_config(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.SetOutOfService("laser", True, "broken mirror", actor=MONA))
    assert _commands(sent) == [CommandKind.OUT_OF_SERVICE]
    assert _snapshot(sent).settings.out_of_service


def test_link_lock_sends_lock_command(lab: ServerRuntime, sent: list[OutgoingMessage]) -> None:
    lab.bus.handle(cmds.LockMachine("laser", "closing time", actor=MONA))
    assert _commands(sent) == [CommandKind.LOCK]


def test_link_enrollment_sends_enroll_command_with_window(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.StartEnrollment("laser", "tom", window_s=45, actor=MONA))
    [message] = [m for m in sent if m.topic == command_topic(SITE, "laser")]
    command = verify_command(message.payload, KEY, now=time.time())
    assert (command.kind, command.timeout_s) == (CommandKind.ENROLL_BADGE, 45)


def test_link_badge_enrolled_event_attaches_badge(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    lab.bus.handle(cmds.StartEnrollment("laser", "tom", actor=MONA))
    ingest(events(EventKind.BADGE_ENROLLED, badge_uid="04C0FFEE", command_id="c1"))
    with lab.new_uow() as uow:
        badge = uow.badges.by_uid("04C0FFEE")
        assert badge is not None and badge.member_id == "tom"


def test_link_auth_request_grants_trained_badge(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    response = _ask(lab, sent, "04A1B2C3")
    assert (response.granted, response.member_id, response.level) == (True, "ada", Level.AUTONOMOUS)


def test_link_auth_request_refuses_untrained_badge_as_not_trained(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    response = _ask(lab, sent, "04FFEE01")
    assert (response.granted, response.reason) == (False, "not_trained")


def test_link_auth_request_from_unknown_controller_gets_no_answer(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    request = AuthRequest("r1", "intruder", "04A1B2C3", time.time())
    answer = lab.bus.handle(
        cmds.AnswerAuthRequest(auth_request_topic(SITE, "laser"), request.encode())
    )
    assert answer is None
    assert not [m for m in sent if m.topic == auth_response_topic(SITE, "laser")]


def test_link_oops_puts_machine_out_of_service(
    lab: ServerRuntime, ingest: Ingest, events: EventFactory
) -> None:
    ingest(events(EventKind.OOPS_REPORTED, member_id="ada", message="smoke from the tube"))
    with lab.new_uow() as uow:
        machine = uow.machines.get("laser")
        assert machine is not None and machine.out_of_service
        assert "smoke" in (machine.out_of_service_reason or "")
        entries, _ = uow.audit.page(action="machine.oops")
        assert [e.actor_id for e in entries] == ["ada"]


def test_link_snapshot_lists_trainers_as_supervisors_and_managers(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.RegisterBadge("tom", "04707070"))
    lab.bus.handle(cmds.RegisterBadge("mona", "04A0A0A0"))
    snapshot = _snapshot(sent)
    tom = snapshot.lookup_staff(badge_digest(KEY, "04707070"))
    mona = snapshot.lookup_staff(badge_digest(KEY, "04A0A0A0"))
    assert tom is not None and tom.roles == (StaffRole.SUPERVISOR,)
    assert mona is not None and mona.roles == (StaffRole.MANAGER,)
    assert snapshot.lookup(badge_digest(KEY, "04A0A0A0")) is None  # not trained to use it


def _online(lab: ServerRuntime) -> None:
    status = ControllerStatus("laser", ControllerState.ONLINE, "0.2.0", "boot-2", time.time())
    lab.bus.handle(cmds.RecordControllerStatus(status_topic(SITE, "laser"), status.encode()))


def test_link_unconfirmed_command_is_resent_when_controller_comes_online(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    command_id = lab.bus.handle(cmds.LockMachine("laser", "closing", actor=MONA))
    _online(lab)
    resent = [m for m in sent if m.topic == command_topic(SITE, "laser")]
    assert len(resent) == 2
    assert resent[0].payload == resent[1].payload, "the same command id, so no double effect"
    assert verify_command(resent[1].payload, KEY, now=time.time()).command_id == command_id


def test_link_applied_command_is_not_resent(
    lab: ServerRuntime, sent: list[OutgoingMessage], ingest: Ingest, events: EventFactory
) -> None:
    command_id = lab.bus.handle(cmds.LockMachine("laser", "closing", actor=MONA))
    ingest(events(EventKind.COMMAND_APPLIED, command_id=command_id, command="lock"))
    _online(lab)
    assert len([m for m in sent if m.topic == command_topic(SITE, "laser")]) == 1
    with lab.new_uow() as uow:
        command = uow.commands.get(command_id)
        assert command is not None and command.applied_at is not None


def _statuses_statements(lab: ServerRuntime, machines: list[str]) -> tuple[int, int]:
    """Statements run recording an `online` status from each machine's controller (one
    with an unconfirmed lock), and the commands resent."""
    for machine in machines:
        lab.bus.handle(cmds.AddMachine(machine, machine.title(), SITE, key_hex=KEY_HEX))
    lab.bus.handle(cmds.LockMachine(machines[0], "closing", actor=MONA))
    statuses = tuple(
        cmds.RecordControllerStatus(
            status_topic(SITE, m),
            ControllerStatus(m, ControllerState.ONLINE, "0.1.0", "boot-1", time.time()).encode(),
        )
        for m in machines
    )
    counted: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        counted.append(statement)

    sent: list[OutgoingMessage] = []
    lab.bus.publish = sent.append
    sa_event.listen(lab.engine, "before_cursor_execute", count)
    try:
        assert lab.bus.handle(cmds.RecordControllerStatuses(statuses)) == [True] * len(machines)
    finally:
        sa_event.remove(lab.engine, "before_cursor_execute", count)
    return len(counted), len([m for m in sent if m.topic == command_topic(SITE, machines[0])])


def test_link_statuses_of_a_fleet_take_as_many_queries_as_one(lab: ServerRuntime) -> None:
    # Every controller re-announces `online` each heartbeat interval: queries per status
    # (its controller, its machine, its pending commands) held the ingest thread.
    few = _statuses_statements(lab, ["a0", "a1"])
    many = _statuses_statements(lab, [f"b{i}" for i in range(10)])
    assert few == many == (few[0], 1)
