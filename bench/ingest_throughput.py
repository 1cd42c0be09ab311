"""Ingest throughput: one event per transaction, as the ingest worker applies them.

    python bench/ingest_throughput.py [--events 2000] [--database-url URL]

Feeds `--events` heartbeats of one open session (one controller, one outbox stream)
through the message bus, each stored, applied and acknowledged in its own durable
transaction (SQLite WAL with synchronous=FULL by default, in a temp folder; or the
given PostgreSQL URL, migrated first — use an empty database). Prints events per
second and per-event latency as Markdown for docs/benchmarks.md. Not a test: nothing
asserts.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import Event, EventKind, Level, events_topic  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402


def _event(seq: int, kind: EventKind, wall: float, **data: object) -> Event:
    return Event(
        event_id=uuid.uuid4().hex,
        controller_id="laser",
        outbox_id="bench-outbox",
        seq=seq,
        boot_id="boot-1",
        wall_time=wall,
        mono_time=float(seq),
        kind=kind,
        data=dict(data),
    )


def run(database_url: str, count: int) -> list[float]:
    upgrade(database_url)
    runtime = ServerRuntime(Settings(database_url=database_url, site="lab"), mqtt_enabled=False)
    runtime.bus.handle(cmds.AddMachine("laser", "Laser", "lab", key_hex="5a" * 32))
    topic = events_topic("lab", "laser")
    start = time.time() - count - 10
    runtime.bus.handle(
        cmds.IngestEvent(
            topic,
            _event(
                1, EventKind.SESSION_STARTED, start, session_id="s1", badge_uid="04A1B2C3",
                member_id="m1", level=Level.AUTONOMOUS.value, snapshot_version=1,
            ).encode(),
        )
    )  # fmt: skip
    timings = []
    for seq in range(2, count + 2):
        payload = _event(
            seq, EventKind.SESSION_HEARTBEAT, start + seq, session_id="s1",
            elapsed_seconds=float(seq), busy_seconds=0.0,
        ).encode()  # fmt: skip
        began = time.perf_counter()
        runtime.bus.handle(cmds.IngestEvent(topic, payload))
        timings.append(time.perf_counter() - began)
    runtime.engine.dispose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        timings = run(url, args.events)
    ordered = sorted(timings)
    engine = url.split(":", 1)[0]
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}, {engine}")
    print("| measure | value |\n| --- | --- |")
    print(f"| events | {len(timings)} |")
    print(f"| events / s | {len(timings) / sum(timings):.0f} |")
    print(f"| p50 per event | {statistics.median(timings) * 1000:.2f} ms |")
    print(f"| p99 per event | {ordered[int(len(ordered) * 0.99) - 1] * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
