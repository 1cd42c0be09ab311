"""The demo lab: machines, members with badges and trainings, one member with none."""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Level, Mode
from server.domain.access import Role
from server.service_layer import commands as cmds
from server.service_layer.messagebus import MessageBus


@dataclass(frozen=True)
class DemoMachine:
    machine_id: str
    name: str
    mode: Mode = Mode.TOGGLE


@dataclass(frozen=True)
class DemoMember:
    member_id: str
    name: str
    badge_uid: str
    trainings: dict[str, Level]
    category: str = "member"


DEMO_MACHINES = (
    DemoMachine("laser", "Laser cutter"),
    DemoMachine("cnc", "CNC router"),
    DemoMachine("printer-1", "3D printer (Prusa)"),
    DemoMachine("printer-2", "3D printer (resin)"),
    DemoMachine("lathe", "Metal lathe"),
)

_A, _S, _T = Level.AUTONOMOUS, Level.SUPERVISED, Level.TRAINER

DEMO_MEMBERS = (
    DemoMember("ada", "Ada Lovelace", "04A1B2C301", {"laser": _T, "cnc": _A, "printer-1": _A}),
    DemoMember("grace", "Grace Hopper", "04A1B2C302", {"printer-1": _T, "printer-2": _T}),
    DemoMember("alan", "Alan Turing", "04A1B2C303", {"laser": _A, "lathe": _A}),
    DemoMember("hedy", "Hedy Lamarr", "04A1B2C304", {"cnc": _T, "lathe": _T}),
    DemoMember("linus", "Linus Torvalds", "04A1B2C305", {"printer-1": _A}, "student"),
    DemoMember("margaret", "Margaret Hamilton", "04A1B2C306", {"laser": _A, "printer-2": _A}),
    DemoMember("tim", "Tim Berners-Lee", "04A1B2C307", {"cnc": _A}, "student"),
    DemoMember("barbara", "Barbara Liskov", "04A1B2C308", {"printer-2": _A, "laser": _A}),
    DemoMember("ken", "Ken Thompson", "04A1B2C309", {"lathe": _A, "printer-1": _A}, "partner"),
    DemoMember("radia", "Radia Perlman", "04A1B2C30A", {"printer-1": _A, "cnc": _A}),
    DemoMember("newbie", "Nora Newcomer", "04A1B2C30B", {}, "non-member"),
)


DEMO_ADMIN_EMAIL = "admin@demo.fablab.example"
DEMO_ADMIN_PASSWORD = "fablab-demo-admin"  # noqa: S105 - a public demo account


def seed_demo_lab(bus: MessageBus, *, site: str, heartbeat_interval_s: int = 60) -> None:
    """Create the demo lab through the same commands a manager's actions produce."""
    bus.handle(
        cmds.AddMember(
            "Demo Admin",
            email=DEMO_ADMIN_EMAIL,
            member_id="demo-admin",
            password=DEMO_ADMIN_PASSWORD,
        )
    )
    bus.handle(cmds.SetRoles("demo-admin", frozenset({Role.ADMIN, Role.MANAGER})))
    for machine in DEMO_MACHINES:
        bus.handle(
            cmds.AddMachine(
                machine.machine_id,
                machine.name,
                site,
                mode=machine.mode,
                heartbeat_interval_s=heartbeat_interval_s,
            )
        )
    for member in DEMO_MEMBERS:
        bus.handle(
            cmds.AddMember(
                member.name,
                email=f"{member.member_id}@demo.fablab.example",
                category=member.category,
                member_id=member.member_id,
            )
        )
        bus.handle(cmds.RegisterBadge(member.member_id, member.badge_uid))
        for machine_id, level in member.trainings.items():
            bus.handle(cmds.GrantTraining(member.member_id, machine_id, level, granted_by="seed"))
