"""hypothesis drives random taps, busy changes, clock steps, disconnects, commands,
oops presses, new snapshots and restarts through the pure state machine, and checks
the invariants of issue 3: the relay is never on without a valid grant; every session
that starts ends exactly once; busy time <= session time; seq strictly increases
(across restarts)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pi_helpers import ALICE, BOB, CAROL, KEY, STRANGER, WALL_START, make_snapshot

from firmware_pi.clock import Instant
from firmware_pi.controller import (
    Controller,
    Effect,
    EmitEvent,
    SendAuthRequest,
    SetOutOfService,
    SetRelay,
)
from protocol import (
    AuthResponse,
    Command,
    CommandKind,
    DenyReason,
    EndReason,
    EventKind,
    Level,
    MachineSettings,
    Mode,
    PermissionEntry,
    StaffEntry,
    StaffRole,
    badge_digest,
    validate_event_data,
)

DAVE, MANAGER = "04DA7E00", "04AA0001"
BADGES = [ALICE, BOB, CAROL, STRANGER, DAVE, MANAGER]


def snapshot(mode: Mode, out_of_service: bool) -> Any:
    base = make_snapshot(heartbeat_interval_s=30)
    return replace(
        base,
        settings=MachineSettings(
            name="x", mode=mode, idle_timeout_s=300, max_duration_s=900,
            heartbeat_interval_s=30, warning_s=60, out_of_service=out_of_service,
            card_removal_grace_s=3, supervisor_window_s=20,
        ),
        permissions=(*base.permissions,
                     PermissionEntry(badge_digest(KEY, DAVE), "m-dave", Level.SUPERVISED)),
        staff=(StaffEntry(badge_digest(KEY, MANAGER), "m-manager", (StaffRole.MANAGER,)),),
    )


actions = st.one_of(
    st.tuples(st.just("tap"), st.sampled_from(BADGES)),
    st.tuples(st.just("busy"), st.booleans()),
    st.tuples(st.just("time"), st.floats(min_value=0.01, max_value=400)),
    st.tuples(st.just("wall_jump"), st.floats(min_value=-86400, max_value=86400)),
    st.tuples(st.just("online"), st.booleans()),
    st.tuples(st.just("answer"), st.booleans()),
    st.tuples(st.just("command"), st.sampled_from(list(CommandKind))),
    st.tuples(st.just("oops"), st.none()),
    st.tuples(st.just("present"), st.sampled_from([*BADGES, None])),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("snapshot"), st.sampled_from(["no_dave", "out_of_service", "in_service"])),
)


class World:
    """The app around the pure controller: relay, a persisted outbox and open session."""

    def __init__(self, mode: Mode, out_of_service: bool) -> None:
        self.snap = snapshot(mode, out_of_service)
        self.wall, self.mono = WALL_START, 1000.0
        self.ids = (f"s-{n}" for n in itertools.count(1))
        self.requests = (f"r-{n}" for n in itertools.count(1))
        self.relay = False
        self.seqs: list[int] = []
        self.events: list[EmitEvent] = []
        self.open: dict[str, Any] | None = None  # what the outbox's open_session row holds
        self.local = (False, None)
        self.online = False
        self.auth: list[str] = []
        self.grants: dict[str, str] = {}  # session id -> why it was allowed
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        return Controller(
            key=KEY, snapshot=self.snap, new_session_id=lambda: next(self.ids),
            new_request_id=lambda: next(self.requests), controller_id="c",
            local_out_of_service=self.local[0], local_reason=self.local[1],
        )

    @property
    def now(self) -> Instant:
        return Instant(self.wall, self.mono)

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, EmitEvent):
                assert validate_event_data(effect.kind, effect.data) == effect.data
                self.seqs.append(len(self.seqs) + 1)
                self.events.append(effect)
                self.track(effect)
            elif isinstance(effect, SetOutOfService):
                self.local = (effect.out_of_service, effect.reason)
            elif isinstance(effect, SetRelay):
                self.relay = effect.on
            elif isinstance(effect, SendAuthRequest):
                self.auth.append(effect.request.request_id)
        session = self.controller.session
        # The relay is on exactly while a granted session runs.
        assert self.relay == (session is not None)
        if session is not None:
            assert session.session_id in self.grants

    def track(self, event: EmitEvent) -> None:
        d = event.data
        if event.kind is EventKind.SESSION_STARTED:
            assert self.open is None
            self.check_grant(d)
            self.open = {"session_id": d["session_id"], "last_wall": self.wall,
                         "elapsed": 0.0, "busy": 0.0}
        elif event.kind is EventKind.SESSION_HEARTBEAT:
            assert self.open is not None and self.open["session_id"] == d["session_id"]
            assert d["busy_seconds"] <= d["elapsed_seconds"]
            self.open.update(last_wall=self.wall, elapsed=d["elapsed_seconds"],
                             busy=d["busy_seconds"])
        elif event.kind is EventKind.SESSION_ENDED:
            assert self.open is not None and self.open["session_id"] == d["session_id"]
            assert d["busy_seconds"] <= d["elapsed_seconds"]
            self.open = None

    def check_grant(self, d: dict[str, Any]) -> None:
        """A session may only start for a badge the snapshot (or the server) allows."""
        uid = d["badge_uid"]
        entry = self.snap.lookup(badge_digest(KEY, uid))
        out = self.snap.settings.out_of_service or self.controller.local_out_of_service
        if d.get("maintenance_override"):
            staff = self.snap.lookup_staff(badge_digest(KEY, uid))
            assert staff is not None and staff.has(StaffRole.MANAGER, self.wall)
            why = "override"
        elif d.get("decided_online"):
            assert entry is None and not out
            why = "online"
        else:
            assert entry is not None and not out
            assert entry.expires_at is None or self.wall < entry.expires_at
            if entry.level is Level.SUPERVISED:
                assert d["supervisor_member_id"] in ("m-bob",)
            why = "snapshot"
        self.grants[d["session_id"]] = why

    def do(self, action: str, arg: Any) -> None:
        c = self.controller
        if action == "tap":
            self.apply(c.tap(arg, self.now, online=self.online))
        elif action == "busy":
            self.apply(c.set_busy(arg, self.now))
        elif action == "time":
            self.mono += arg
            self.wall += arg
            self.apply(c.tick(self.now))
        elif action == "wall_jump":  # NTP step: wall jumps, monotonic does not
            self.wall = max(0.0, self.wall + arg)
            self.apply(c.tick(self.now))
        elif action == "online":
            self.online = arg
        elif action == "answer" and self.auth:
            response = AuthResponse(
                self.auth[-1], "c", arg, int(self.wall),
                member_id="m-new" if arg else None, level=Level.AUTONOMOUS if arg else None,
                reason=None if arg else DenyReason.NOT_TRAINED,
            )
            self.apply(c.auth_response(response, self.now))
        elif action == "command":
            command = Command(f"c-{len(self.seqs)}", "c", "s", "m", arg, 0, 1, timeout_s=10)
            self.apply(c.command(command, self.now))
        elif action == "oops":
            self.apply(c.oops(self.now))
        elif action == "present":
            self.apply(c.card_present(arg, self.now))
        elif action == "snapshot":  # a new config: Dave dropped, or the machine out / back
            base = snapshot(self.snap.settings.mode, arg == "out_of_service")
            permissions = base.permissions if arg != "no_dave" else tuple(
                p for p in base.permissions if p.badge_digest != badge_digest(KEY, DAVE))
            self.snap = replace(base, version=self.snap.version + 1, permissions=permissions)
            self.apply(c.set_snapshot(self.snap, self.now))
        elif action == "restart":
            # Crash: the controller's memory is lost, the relay drops (power) and the next
            # run closes the open session from what was persisted.
            self.relay = False
            self.mono += 5.0
            self.wall += 5.0
            self.controller = self.new_controller()
            if self.open is not None:
                opened = self.open
                self.apply(self.controller.close_interrupted(
                    session_id=opened["session_id"], last_wall=opened["last_wall"],
                    elapsed_seconds=opened["elapsed"], busy_seconds=opened["busy"],
                ))
                ended = self.events[-1].data
                assert ended["reason"] == "controller_restart"
                assert ended["ended_wall_time"] == opened["last_wall"]

    def finish(self) -> None:
        self.apply(self.controller.stop(EndReason.SHUTDOWN, self.now))
        assert not self.relay
        started = [e.data["session_id"] for e in self.events
                   if e.kind is EventKind.SESSION_STARTED]
        ended = [e.data["session_id"] for e in self.events if e.kind is EventKind.SESSION_ENDED]
        assert sorted(started) == sorted(ended)  # each started session ended exactly once
        assert len(set(ended)) == len(ended)
        assert all(b > a for a, b in itertools.pairwise(self.seqs))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(list(Mode)),
    out_of_service=st.booleans(),
    steps=st.lists(actions, max_size=60),
)
def test_controller_invariants_hold_for_any_input_sequence(
    mode: Mode, out_of_service: bool, steps: list[tuple[str, Any]]
) -> None:
    world = World(mode, out_of_service)
    for action, arg in steps:
        world.do(action, arg)
    world.finish()
