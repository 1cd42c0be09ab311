"""Building one machine's signed snapshot with prepaid members, on SQLite.

    python bench/prepaid_snapshot.py --members 50 200 --sessions 20 [--repeat 5]

For each member count it creates a fresh SQLite database (a file in a temporary
directory), migrates it, seeds one machine priced at 12.00 an hour in 15-minute steps,
the members (each trained on the machine, with a badge and a 20.00 top-up) and
`--sessions` finished sessions per member in October 2026 on no approved statement.
Then it times `PublishConfigs` of that machine with a forced reissue (the snapshot is
built again, signed and its version recorded), `--repeat` times, first with the
member category not prepaid, then prepaid (every member's balance derived from the
ledger and the unsettled sessions, priced in Python, and their allowance on the
machine). Results print as Markdown for docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import Level  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.adapters.orm import UsageSession  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.domain.billing.policy import BillingPolicy  # noqa: E402
from server.service_layer import billing_commands as bc  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402

OCTOBER = datetime(2026, 10, 1, 8, tzinfo=UTC)


def _seed(runtime: ServerRuntime, members: int, sessions: int) -> None:
    bus = runtime.bus
    bus.handle(cmds.AddMachine("m0", "Laser", "lab", key_hex="11" * 32))
    bus.handle(bc.AddTariff("cutting", "Cutting", ("m0",)))
    bus.handle(bc.AddRate("cutting", date(2026, 1, 1), BillingPolicy(), 1200, rounding_minutes=15))
    for i in range(members):
        member_id = f"p{i:05d}"
        bus.handle(cmds.AddMember(f"Member {i}", member_id=member_id))
        bus.handle(cmds.RegisterBadge(member_id, f"04{i:08X}"))
        bus.handle(cmds.GrantTraining(member_id, "m0", Level.AUTONOMOUS))
        bus.handle(bc.AdjustLedger(member_id, "topup", 2000, "paid"))
    with runtime.new_uow() as uow:
        for i in range(members):
            for k in range(sessions):
                start = OCTOBER + timedelta(hours=k, minutes=i % 60)
                uow.sessions.add(UsageSession(
                    id=f"s{i}-{k}", machine_id="m0", controller_id="m0",
                    member_id=f"p{i:05d}", reported_member_id=f"p{i:05d}",
                    started_at=start, ended_at=start + timedelta(minutes=20),
                    elapsed_seconds=1200.0, busy_seconds=0.0,
                ))  # fmt: skip
        uow.commit()


def _time_publish(runtime: ServerRuntime, repeat: int) -> float:
    """Median seconds of one forced rebuild of the machine's config."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        runtime.bus.handle(cmds.PublishConfigs(frozenset({"m0"}), reissue_older_than_s=0))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| members | unsettled sessions | not prepaid (ms) | prepaid (ms) |")
    print("| ---: | ---: | ---: | ---: |")
    for members in args.members:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            upgrade(url)
            runtime = ServerRuntime(Settings(database_url=url), mqtt_enabled=False)
            _seed(runtime, members, args.sessions)
            plain = _time_publish(runtime, args.repeat)
            runtime.bus.handle(bc.SetCategoryPrepaid("member", True, 500, 300))
            prepaid = _time_publish(runtime, args.repeat)
            runtime.engine.dispose()
        print(f"| {members:,} | {members * args.sessions:,} | {plain * 1000:.1f} | "
              f"{prepaid * 1000:.1f} |")  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
