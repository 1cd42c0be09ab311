"""The demo's billing: prices, credit rules, claims and a past month of sessions.

The month of sessions goes through ingest as controller events (the path real sessions
take), on an outbox of its own per machine, so that a treasurer can open, compute and
close that month in the demo.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from protocol import EndReason, Event, EventKind, Level, events_topic
from server.domain.billing.metering import month_bounds
from server.domain.billing.policy import BillingPolicy
from server.seed import DEMO_MEMBERS
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from server.service_layer.messagebus import MessageBus

TARIFFS = (
    ("cutting", "Laser cutting", ("laser",)),
    ("milling", "CNC and lathe", ("cnc", "lathe")),
    ("printing", "3D printing", ("printer-1", "printer-2")),
)
# tariff, unlocked /h, busy /h, minimum, rounding, free minutes (cents, minutes)
RATES = (
    ("cutting", 1200, 0, 200, 15, 0),
    ("milling", 600, 2400, 0, 6, 60),
    ("printing", 200, 0, 0, 1, 120),
)
CONTRIBUTION_TYPES = (
    ("supervising", "Supervising a session", "hour", "money", 1000, "supervision"),
    ("maintenance", "Maintenance", "hour", "minutes", 60, "maintenance"),
    ("teaching", "Training given", "item", "money", 1500, "training"),
    ("recipe", "Recipe published", "item", "minutes", 30, None),
    ("hosting", "Open-hours hosting", "hour", "money", 800, None),
)


def seed_demo_billing(
    bus: MessageBus, *, site: str, policy: BillingPolicy, today: date, seed: int = 7
) -> int:
    """Prices and credit rules from the first day of last month, a rate change on its
    15th, last month's sessions and two claims; returns the open period of last month."""
    first, _ = month_bounds(today.replace(day=1) - timedelta(days=1))
    since = datetime.combine(first, time(0), tzinfo=UTC) - timedelta(days=1)
    for tariff_id, name, machines in TARIFFS:
        bus.handle(bc.AddTariff(tariff_id, name, machines, at=since))
    for tariff_id, unlocked, busy, minimum, rounding, free in RATES:
        bus.handle(bc.AddRate(tariff_id, first, policy, unlocked, busy, minimum, rounding, free))
    bus.handle(bc.AddRate("cutting", first.replace(day=15), policy, 1500, 0, 200, 15))
    bus.handle(bc.AddRate("cutting", first, policy, 600, 0, 100, 15, category_id="student"))
    for category, multiplier in (("non-member", 15_000), ("partner", 8_000)):
        bus.handle(bc.SetCategoryMultiplier(category, multiplier))
    for type_id, name, unit, kind, value, source in CONTRIBUTION_TYPES:
        bus.handle(bc.AddContributionType(type_id, name, unit, kind, value, source, at=since))
    _feed_month(bus, site, first, policy.tz, random.Random(seed))
    recipe = bus.handle(
        bc.SubmitClaim(
            "linus",
            "recipe",
            1,
            "PLA settings for the Prusa",
            "https://wiki.example/recipes/pla-prusa",
        )
    )
    bus.handle(bc.SubmitClaim("radia", "hosting", 180, "Saturday open hours"))
    bus.handle(bc.DecideClaim(recipe, True, "tested, thanks", policy))
    period_id: int = bus.handle(bc.OpenPeriod(first, policy))
    return period_id


def _feed_month(bus: MessageBus, site: str, first: date, tz: ZoneInfo, rng: random.Random) -> None:
    """One or two sessions a day on machines their members are trained for."""
    trained = [(m, machine, level) for m in DEMO_MEMBERS for machine, level in m.trainings.items()]
    trainers = {
        machine: m.member_id
        for m in DEMO_MEMBERS
        for machine, level in m.trainings.items()
        if level is Level.TRAINER
    }
    with bus.uow_factory() as uow:  # the controllers decided from the current snapshots
        versions = {m.id: m.snapshot_version for m in uow.machines.all()}
    seqs: dict[str, int] = {}
    day = first
    while day.month == first.month:
        for _ in range(rng.randint(1, 2)):
            member, machine, level = rng.choice(trained)
            local = datetime.combine(day, time(rng.randint(9, 20), rng.choice((0, 15, 30, 45))))
            start = local.replace(tzinfo=tz).timestamp()
            seconds = float(rng.randint(5, 150) * 60 + rng.randint(0, 59))
            supervisor = trainers.get(machine) if rng.random() < 0.1 else None
            if supervisor == member.member_id:
                supervisor = None
            started = {
                "session_id": uuid.uuid4().hex,
                "badge_uid": member.badge_uid,
                "member_id": member.member_id,
                "level": (Level.SUPERVISED if supervisor else level).value,
                "snapshot_version": versions[machine],
                **({"supervisor_member_id": supervisor} if supervisor else {}),
            }
            ended = {
                "session_id": started["session_id"],
                "reason": EndReason.BADGE.value,
                "elapsed_seconds": seconds,
                "busy_seconds": round(seconds * rng.uniform(0.3, 0.9)),
            }
            for kind, data, wall in (
                (EventKind.SESSION_STARTED, started, start),
                (EventKind.SESSION_ENDED, ended, start + seconds),
            ):
                seqs[machine] = seqs.get(machine, 0) + 1
                event = Event(
                    event_id=uuid.uuid4().hex,
                    controller_id=machine,
                    outbox_id=f"demo-history-{machine}",
                    seq=seqs[machine],
                    boot_id="history",
                    wall_time=wall,
                    mono_time=float(seqs[machine]),
                    kind=kind,
                    data=data,
                )
                bus.handle(cmds.IngestEvent(events_topic(site, machine), event.encode()))
        day += timedelta(days=1)
