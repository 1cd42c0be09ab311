"""The one place that wires a controller together from real or fake parts."""

from __future__ import annotations

import logging
import uuid
from contextlib import ExitStack
from typing import Any, overload

from firmware_pi.app import BusyInput, ControllerApp, ReaderT
from firmware_pi.clock import Clock, SystemClock
from firmware_pi.config import ControllerConfig
from firmware_pi.controller import Controller
from firmware_pi.hardware import MachineHardware
from firmware_pi.link import Link, MqttLink
from firmware_pi.outbox import Outbox
from firmware_pi.reader import CardReader, KeyboardWedgeReader, MFRC522Reader, SimulatedReader
from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from firmware_pi.watchdog import SystemdNotifier

log = logging.getLogger(__name__)


def make_reader(config: ControllerConfig) -> CardReader:
    """The card reader named in the config (the MFRC522 one imports `mfrc522` only here)."""
    kind = config.reader
    if kind == "simulated":
        return SimulatedReader()
    if kind == "mfrc522":
        return MFRC522Reader(
            bus=config.mfrc522_bus, device=config.mfrc522_device, rst_pin=config.mfrc522_rst_pin,
            badge_keys=config.badge_keys,
        )
    if kind == "keyboard":
        return KeyboardWedgeReader(device=config.reader_device)
    raise ValueError(f"unknown reader kind {kind!r}")  # config validation prevents this


def make_hardware(config: ControllerConfig, *, pin_factory: Any = None) -> MachineHardware:
    """The machine's parts on the configured pins; the relay first, and off."""
    return MachineHardware(
        relay_pin=config.relay_pin,
        relay_active_high=config.relay_active_high,
        green_led_pin=config.green_led_pin,
        red_led_pin=config.red_led_pin,
        buzzer_pin=config.buzzer_pin,
        busy_pin=config.busy_pin,
        busy_active_high=config.busy_active_high,
        busy_mcp3008_channel=config.busy_mcp3008_channel,
        busy_threshold=config.busy_threshold,
        oops_pin=config.oops_pin,
        pin_factory=pin_factory,
    )


@overload
def build_controller(
    config: ControllerConfig,
    *,
    pin_factory: Any = None,
    reader: None = None,
    clock: Clock | None = None,
    link: Link | None = None,
    busy_input: BusyInput | None = None,
    notifier: SystemdNotifier | None = None,
) -> ControllerApp[CardReader]: ...


@overload
def build_controller(
    config: ControllerConfig,
    *,
    pin_factory: Any = None,
    reader: ReaderT,
    clock: Clock | None = None,
    link: Link | None = None,
    busy_input: BusyInput | None = None,
    notifier: SystemdNotifier | None = None,
) -> ControllerApp[ReaderT]: ...


def build_controller(
    config: ControllerConfig,
    *,
    pin_factory: Any = None,
    reader: CardReader | None = None,
    clock: Clock | None = None,
    link: Link | None = None,
    busy_input: BusyInput | None = None,
    notifier: SystemdNotifier | None = None,
) -> ControllerApp[Any]:
    """A ready-to-start ControllerApp; unset parts are the real ones the config names.

    The hardware comes first so that the relay is driven off as early as possible.
    """
    boot_id = str(uuid.uuid4())
    clock = clock or SystemClock()
    with ExitStack() as undo:
        hardware = make_hardware(config, pin_factory=pin_factory)
        undo.callback(hardware.close)
        the_reader = reader if reader is not None else make_reader(config)
        undo.callback(the_reader.close)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        outbox = Outbox.open(config.outbox_path, max_events=config.outbox_max_events)
        undo.callback(outbox.close)
        verifier = SnapshotVerifier(
            key=config.key,
            site=config.site,
            machine=config.machine,
            controller_id=config.controller_id,
        )
        snapshot_store = SnapshotStore(config.snapshot_path, verifier)
        local = outbox.local_service()
        if local.out_of_service:
            log.warning("machine is out of service (%s) since before this start", local.reason)
        controller = Controller(
            key=config.key,
            snapshot=snapshot_store.load(),
            controller_id=config.controller_id,
            snapshot_max_age_s=config.snapshot_max_age_s,
            auth_timeout_s=config.auth_timeout_s,
            presence_sensing=the_reader.senses_presence,
            local_out_of_service=local.out_of_service,
            local_reason=local.reason,
            protect_badges=config.badge_keys is not None,
        )
        if link is None:
            link = MqttLink(
                broker=config.broker,
                controller_id=config.controller_id,
                site=config.site,
                machine=config.machine,
                firmware_version=config.firmware_version,
                boot_id=boot_id,
                username=config.username,
                password=config.password,
                ca_file=config.ca_file,
                wall_clock=lambda: clock.now().wall,
            )
        app = ControllerApp(
            config=config,
            controller=controller,
            hardware=hardware,
            reader=the_reader,
            outbox=outbox,
            link=link,
            snapshot_store=snapshot_store,
            verifier=verifier,
            clock=clock,
            boot_id=boot_id,
            busy_input=busy_input,
            notifier=notifier,
        )
        undo.pop_all()
    log.info(
        "controller %s for %s/%s built (boot %s, outbox %s, %d events pending)",
        config.controller_id, config.site, config.machine, boot_id, outbox.outbox_id,
        len(outbox),
    )
    return app
