"""The whole controller with mock pins, a simulated reader and no broker (or a fake link)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pi_helpers import (
    ALICE,
    BOB,
    STRANGER,
    FakeClock,
    FakeLink,
    make_snapshot,
    signed_config,
    wait_until,
)

from firmware_pi.app import RESEND_AFTER_S, ControllerApp
from firmware_pi.bootstrap import build_controller
from firmware_pi.config import ControllerConfig
from firmware_pi.outbox import Outbox
from firmware_pi.reader import CardReader, SimulatedReader
from protocol import EventKind, PermissionSnapshot, TopicKind, validate_event_data

RELAY = 17

BuildApp = Callable[..., ControllerApp[Any]]


@pytest.fixture
def build_app(
    controller_config: ControllerConfig,
    pin_factory: MockFactory,
    fake_clock: FakeClock,
    fake_link: FakeLink,
) -> Iterator[BuildApp]:
    """Builds (and at teardown stops) apps wired to the mock pins, fake clock and fake link."""
    apps: list[ControllerApp[Any]] = []

    def build(**overrides: Any) -> ControllerApp[Any]:
        options: dict[str, Any] = {
            "pin_factory": pin_factory,
            "reader": SimulatedReader(),
            "clock": fake_clock,
            "link": fake_link,
        }
        options.update(overrides)
        app = build_controller(options.pop("config", controller_config), **options)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.stop()


def settle(app: ControllerApp[Any]) -> None:
    """Wait for two full loop iterations: whatever was queued before is handled."""
    target = app.iterations + 2
    wait_until(lambda: app.iterations >= target)


def pending_kinds(config: ControllerConfig) -> list[EventKind]:
    """What a stopped app left in its outbox, read back from disk."""
    with Outbox(config.outbox_path) as outbox:
        return [e.kind for e in outbox.pending()]


def test_app_grants_from_stored_snapshot(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, pin_factory: MockFactory
) -> None:
    app = build_app()
    app.start()

    app.reader.tap(ALICE)

    wait_until(lambda: app.hardware.relay.is_active)
    assert pin_factory.pin(RELAY).state is True
    assert app.controller.session is not None
    assert app.controller.session.member_id == "m-alice"
    assert len(app.outbox) == 1


def test_app_records_event_before_relay_moves(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot
) -> None:
    app = build_app()
    outbox_sizes_when_relay_moved: list[int] = []
    relay_on = app.hardware.relay.on

    def spy_on() -> None:
        outbox_sizes_when_relay_moved.append(len(app.outbox))
        relay_on()

    app.hardware.relay.on = spy_on  # type: ignore[method-assign]
    app.start()

    app.reader.tap(ALICE)

    wait_until(lambda: app.hardware.relay.is_active)
    assert outbox_sizes_when_relay_moved == [1]


def test_app_denies_everyone_without_snapshot(
    build_app: BuildApp, pin_factory: MockFactory
) -> None:
    app = build_app()
    app.start()

    app.reader.tap(ALICE)

    wait_until(lambda: len(app.outbox) == 1)
    assert app.controller.snapshot is None
    assert pin_factory.pin(RELAY).state is False


def test_app_denies_unknown_badge(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, pin_factory: MockFactory
) -> None:
    app = build_app()
    app.start()

    app.reader.tap(STRANGER)

    wait_until(lambda: len(app.outbox) == 1)
    assert (app.outbox.pending()[0].kind, app.outbox.pending()[0].data["reason"]) == (
        EventKind.BADGE_DENIED,
        "unknown_badge",
    )
    assert pin_factory.pin(RELAY).state is False


def test_app_switches_relay_off_on_second_tap(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, pin_factory: MockFactory
) -> None:
    app = build_app()
    app.start()
    app.reader.tap(ALICE)
    wait_until(lambda: app.hardware.relay.is_active)

    app.reader.tap(ALICE)

    wait_until(lambda: not app.hardware.relay.is_active)
    assert pin_factory.pin(RELAY).state is False
    assert [e.kind for e in app.outbox.pending()] == [
        EventKind.SESSION_STARTED,
        EventKind.SESSION_ENDED,
    ]


def test_app_publishes_pending_events_in_seq_order_when_connected(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    app = build_app()
    app.start()
    for uid in (STRANGER, ALICE, BOB):
        app.reader.tap(uid)
    wait_until(lambda: len(app.outbox) == 3)

    fake_link.connect()

    wait_until(lambda: fake_link.published_seqs() == [1, 2, 3])
    for event in fake_link.published:
        validate_event_data(event.kind, event.data)


def test_app_publishes_new_events_while_connected(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()

    app.reader.tap(ALICE)

    wait_until(lambda: fake_link.published_seqs() == [1])
    assert fake_link.published[0].kind is EventKind.SESSION_STARTED


def test_app_deletes_acked_events(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    app.reader.tap(ALICE)
    wait_until(lambda: fake_link.published_seqs() == [1, 2])

    fake_link.deliver_ack(1, outbox_id=app.outbox.outbox_id)

    wait_until(lambda: len(app.outbox) == 1)
    assert app.outbox.pending()[0].seq == 2


def test_app_deletes_rejected_events_covered_by_ack(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    wait_until(lambda: fake_link.published_seqs() == [1])

    fake_link.deliver_ack(1, outbox_id=app.outbox.outbox_id, rejected=(1,))

    wait_until(lambda: len(app.outbox) == 0)


def test_app_ignores_ack_for_another_outbox(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    fake_clock: FakeClock,
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    wait_until(lambda: fake_link.published_seqs() == [1])

    fake_link.deliver_ack(1, outbox_id="previous-outbox")
    settle(app)

    assert len(app.outbox) == 1


def test_app_ignores_rejections_in_an_ack_for_another_outbox(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    wait_until(lambda: fake_link.published_seqs() == [1])

    with caplog.at_level(logging.INFO, logger="firmware_pi"):
        fake_link.deliver_ack(1, outbox_id="another-outbox", rejected=(1,))
        settle(app)

    assert "server rejected events" not in caplog.text
    assert len(app.outbox) == 1


def test_app_survives_malformed_ack(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    wait_until(lambda: fake_link.published_seqs() == [1])

    fake_link.deliver(TopicKind.ACK, b"not json")
    fake_link.deliver_ack(1, outbox_id=app.outbox.outbox_id)

    wait_until(lambda: len(app.outbox) == 0)
    assert app.running


def test_app_resends_unacked_events_after_reconnect(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_link: FakeLink
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    app.reader.tap(ALICE)
    wait_until(lambda: fake_link.published_seqs() == [1, 2])
    fake_link.deliver_ack(1, outbox_id=app.outbox.outbox_id)
    wait_until(lambda: len(app.outbox) == 1)

    fake_link.connect()  # a reconnect

    wait_until(lambda: fake_link.published_seqs() == [1, 2, 2])


def test_app_resends_events_unacked_too_long(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    fake_clock: FakeClock,
) -> None:
    fake_link.connect()
    app = build_app()
    app.start()
    app.reader.tap(STRANGER)
    wait_until(lambda: fake_link.published_seqs() == [1])

    fake_clock.advance(RESEND_AFTER_S + 1)

    wait_until(lambda: fake_link.published_seqs() == [1, 1])


def test_app_sends_heartbeat_as_time_passes(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_clock: FakeClock
) -> None:
    app = build_app()
    app.start()
    app.reader.tap(ALICE)
    wait_until(lambda: app.hardware.relay.is_active)

    fake_clock.advance(61)

    wait_until(lambda: len(app.outbox) == 2)
    heartbeat = app.outbox.pending()[1]
    assert heartbeat.kind is EventKind.SESSION_HEARTBEAT
    assert heartbeat.data["elapsed_seconds"] == 61.0


def test_app_stamps_events_with_clock_and_boot(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot, fake_clock: FakeClock
) -> None:
    app = build_app()
    app.start()
    now = fake_clock.now()

    app.reader.tap(ALICE)

    wait_until(lambda: len(app.outbox) == 1)
    event = app.outbox.pending()[0]
    assert (event.wall_time, event.mono_time) == (now.wall, now.mono)
    assert event.boot_id == app.boot_id
    assert event.controller_id == app.config.controller_id


def test_app_takes_newer_signed_config(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    controller_config: ControllerConfig,
) -> None:
    app = build_app()
    app.start()
    payload = signed_config(make_snapshot(version=2, out_of_service=True))

    fake_link.deliver(TopicKind.CONFIG, payload)

    wait_until(lambda: app.controller.snapshot is not None and app.controller.snapshot.version == 2)
    assert controller_config.snapshot_path.read_bytes() == payload


def test_app_takes_first_config_without_stored_snapshot(
    build_app: BuildApp, fake_link: FakeLink, pin_factory: MockFactory
) -> None:
    app = build_app()
    app.start()

    fake_link.deliver(TopicKind.CONFIG, signed_config())
    wait_until(lambda: app.controller.snapshot is not None)
    app.reader.tap(ALICE)

    wait_until(lambda: pin_factory.pin(RELAY).state is True)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(signed_config(make_snapshot(version=9), key=b"k" * 32), id="forged"),
        pytest.param(b"{", id="malformed"),
        pytest.param(b"", id="empty"),
        pytest.param(signed_config(make_snapshot(version=9, machine="cnc")), id="other-machine"),
        pytest.param(
            signed_config(make_snapshot(version=9, controller_id="ctrl-x")), id="other-controller"
        ),
    ],
)
def test_app_ignores_config_it_must_not_use(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    payload: bytes,
) -> None:
    app = build_app()
    app.start()

    fake_link.deliver(TopicKind.CONFIG, payload)
    settle(app)

    assert app.controller.snapshot == stored_snapshot


def test_app_stores_only_accepted_config(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_link: FakeLink,
    controller_config: ControllerConfig,
) -> None:
    stored = controller_config.snapshot_path.read_bytes()
    app = build_app()
    app.start()

    fake_link.deliver(TopicKind.CONFIG, signed_config(make_snapshot(version=9), key=b"k" * 32))
    settle(app)

    assert controller_config.snapshot_path.read_bytes() == stored


def test_app_ignores_older_config(
    build_app: BuildApp, fake_link: FakeLink, controller_config: ControllerConfig
) -> None:
    app = build_app()
    app.start()
    fake_link.deliver(TopicKind.CONFIG, signed_config(make_snapshot(version=5)))
    wait_until(lambda: app.controller.snapshot is not None)

    fake_link.deliver(TopicKind.CONFIG, signed_config(make_snapshot(version=4)))
    settle(app)

    assert app.controller.snapshot is not None
    assert app.controller.snapshot.version == 5
    stored = json.loads(controller_config.snapshot_path.read_bytes())
    assert stored["snapshot"]["version"] == 5


def test_app_stop_ends_session_with_shutdown_and_relay_off(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    pin_factory: MockFactory,
    controller_config: ControllerConfig,
) -> None:
    app = build_app()
    app.start()
    app.reader.tap(ALICE)
    wait_until(lambda: app.hardware.relay.is_active)

    app.stop()

    assert pin_factory.pin(RELAY).state is False
    assert pending_kinds(controller_config) == [
        EventKind.SESSION_STARTED,
        EventKind.SESSION_ENDED,
    ]
    with Outbox(controller_config.outbox_path) as outbox:
        assert outbox.pending()[-1].data["reason"] == "shutdown"


def test_app_stop_closes_link_and_reader(build_app: BuildApp, fake_link: FakeLink) -> None:
    app = build_app()
    app.start()

    app.stop()

    assert fake_link.stopped
    assert app.reader.read(timeout=0) is None
    assert not app.running


def test_app_switches_relay_off_at_construction(
    build_app: BuildApp, pin_factory: MockFactory
) -> None:
    app = build_app()

    assert pin_factory.pin(RELAY).state is False
    assert not app.hardware.relay.is_active


def test_app_keeps_relay_off_after_restart_during_session(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    controller_config: ControllerConfig,
) -> None:
    first = build_app()
    first.start()
    first.reader.tap(ALICE)
    wait_until(lambda: first.hardware.relay.is_active)
    first.stop()

    second = build_app(pin_factory=MockFactory(), link=FakeLink())
    second.start()

    assert not second.hardware.relay.is_active
    assert second.controller.session is None


def test_app_stop_before_start_closes_parts(
    build_app: BuildApp, fake_link: FakeLink, pin_factory: MockFactory
) -> None:
    app = build_app()

    app.stop()

    assert app.hardware.relay.closed
    Outbox(app.config.outbox_path).close()  # the file is free again


class GarbageReader(CardReader):
    """A reader that breaks its contract once, then reports a good badge."""

    def __init__(self) -> None:
        self.uids = ["not hex", ALICE]

    def read(self, timeout: float) -> str | None:
        return self.uids.pop(0) if self.uids else None


def test_app_ignores_unreadable_uid_from_reader(
    build_app: BuildApp, stored_snapshot: PermissionSnapshot
) -> None:
    app = build_app(reader=GarbageReader())
    app.start()

    wait_until(lambda: app.hardware.relay.is_active)
    assert app.running


def test_app_runs_only_once(build_app: BuildApp) -> None:
    app = build_app()
    app.start()
    app.stop()

    with pytest.raises(RuntimeError, match="runs once"):
        app.start()


class BrokenReader(CardReader):
    def read(self, timeout: float) -> str | None:
        raise OSError("reader unplugged")


def test_app_switches_relay_off_when_loop_fails(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    pin_factory: MockFactory,
) -> None:
    app = build_app(reader=BrokenReader())
    app.hardware.relay.on()

    app.start()

    wait_until(lambda: not app.running)
    assert isinstance(app.failure, OSError)
    assert pin_factory.pin(RELAY).state is False


def test_app_decides_offline_without_broker(
    controller_config: ControllerConfig,
    stored_snapshot: PermissionSnapshot,
    pin_factory: MockFactory,
) -> None:
    # The real MQTT link, pointed at a port where nothing listens.
    app = build_controller(controller_config, pin_factory=pin_factory, reader=SimulatedReader())
    try:
        app.start()

        app.reader.tap(ALICE)

        wait_until(lambda: app.hardware.relay.is_active)
        assert pin_factory.pin(RELAY).state is True
        assert len(app.outbox) == 1
        assert not app.connected
        assert app.hardware.leds.offline
    finally:
        app.stop()
    assert pin_factory.pin(RELAY).state is False


def test_app_builds_from_example_like_config_file(tmp_path: Path, pin_factory: MockFactory) -> None:
    example = Path(__file__).parents[2] / "firmware_pi" / "example-config.toml"
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        example.read_text()
        .replace('"/var/lib/fablab-pi"', '"data"')
        .replace("127.0.0.1:1883", "127.0.0.1:1")
    )
    config = ControllerConfig.load(config_path)

    app = build_controller(config, pin_factory=pin_factory)
    app.start()
    app.stop()

    assert (tmp_path / "data" / "outbox.sqlite3").exists()


def test_app_announces_online_status_every_heartbeat_interval_when_idle(
    build_app: BuildApp,
    stored_snapshot: PermissionSnapshot,
    fake_clock: FakeClock,
    fake_link: FakeLink,
) -> None:
    app = build_app()
    fake_link.connect()
    app.start()
    wait_until(lambda: fake_link.status_announcements == 1)
    fake_clock.advance(stored_snapshot.settings.heartbeat_interval_s - 1)
    time.sleep(0.1)
    assert fake_link.status_announcements == 1, "not before the interval"
    fake_clock.advance(1)
    wait_until(lambda: fake_link.status_announcements == 2)
    assert app.controller.session is None
