"""Training change through the API → the controller's decision, over a real Mosquitto.

    python bench/grant_latency.py [--rounds 50] [--members 200]

Starts its own Mosquitto (from the `mosquitto` binary, on a free loopback port), the
server on SQLite in a temp folder with `--members` trained members (so the snapshot is
realistically large), and one controller with mock pins. Each round times:

- grant: `POST /api/trainings` for an untrained badge → the signed config reaches the
  controller → a tap switches the relay on;
- revoke: `POST /api/trainings/revoke` → the new config reaches the controller → a tap
  leaves the relay off (timed until the controller holds the snapshot without the badge).

The issue's target is 2 s for each. Results print as Markdown for docs/benchmarks.md.
Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402

from firmware_pi.bootstrap import build_controller  # noqa: E402
from firmware_pi.config import ControllerConfig  # noqa: E402
from firmware_pi.reader import SimulatedReader  # noqa: E402
from protocol import Level, badge_digest  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.api.main import create_app  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.domain.access import Role  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402
from tests.fixtures import MosquittoServer  # noqa: E402

KEY_HEX = "5a" * 32
BADGE = "04BE0C0001"


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--members", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fablab-bench-"))
    broker = MosquittoServer(tmp / "broker")
    broker.start()
    url = f"sqlite:///{tmp / 'server.sqlite3'}"
    upgrade(url)
    server = ServerRuntime(Settings(database_url=url, mqtt_url=broker.url, site="bench"))
    bus = server.bus
    bus.handle(cmds.AddMachine("laser", "Laser", "bench", key_hex=KEY_HEX))
    for i in range(args.members):
        bus.handle(cmds.AddMember(f"Member {i}", member_id=f"m{i}"))
        bus.handle(cmds.RegisterBadge(f"m{i}", f"04AA{i:06X}"))
        bus.handle(cmds.GrantTraining(f"m{i}", "laser", Level.AUTONOMOUS))
    bus.handle(cmds.AddMember("Nora", member_id="nora"))
    bus.handle(cmds.RegisterBadge("nora", BADGE))
    bus.handle(cmds.AddMember("Mona", member_id="mona"))
    bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    token = bus.handle(cmds.CreateApiToken("mona", "bench")).token
    server.start(wait=10)
    reader = SimulatedReader()
    config = ControllerConfig(
        controller_id="laser", site="bench", machine="laser", broker_url=broker.url,
        key_hex=KEY_HEX, data_dir=tmp / "controller",
    )  # fmt: skip
    app = build_controller(config, pin_factory=MockFactory(), reader=reader)
    app.start()
    key = bytes.fromhex(KEY_HEX)

    def holds_badge() -> bool:
        snapshot = app.controller.snapshot
        return snapshot is not None and snapshot.lookup(badge_digest(key, BADGE)) is not None

    headers = {"Authorization": f"Bearer {token}"}
    grants: list[float] = []
    revokes: list[float] = []
    with TestClient(create_app(server)) as client:
        _wait(lambda: app.controller.snapshot is not None)
        for _ in range(args.rounds):
            started = time.perf_counter()
            body = {"member_id": "nora", "training_type_id": "laser", "level": "autonomous"}
            client.post("/api/trainings", json=body, headers=headers).raise_for_status()
            _wait(holds_badge)
            reader.tap(BADGE)
            _wait(lambda: app.hardware.relay.is_active)
            grants.append(time.perf_counter() - started)
            reader.tap(BADGE)  # end the session
            _wait(lambda: not app.hardware.relay.is_active)
            started = time.perf_counter()
            revoke = {"member_id": "nora", "training_type_id": "laser"}
            client.post("/api/trainings/revoke", json=revoke, headers=headers).raise_for_status()
            _wait(lambda: not holds_badge())
            revokes.append(time.perf_counter() - started)
    app.stop()
    server.stop()
    broker.stop()
    python = platform.python_version()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {python}")
    print(f"Rounds: {args.rounds}, snapshot of {args.members + 1} badges, server on SQLite\n")
    print("| measure | p50 | p90 | max | target |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in (("grant → relay on", grants), ("revoke → badge off snapshot", revokes)):
        cells = [statistics.median(values), _percentile(values, 0.9), max(values)]
        print(f"| {name} | " + " | ".join(f"{v * 1000:.1f} ms" for v in cells) + " | 2,000 ms |")


if __name__ == "__main__":
    main()
