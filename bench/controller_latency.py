"""Badge-to-relay latency and resident memory of the whole controller app.

    python bench/controller_latency.py [--taps 1000] [--memory-taps 10000] [--data-dir DIR]

What is timed, per tap: from the simulated reader's tap (the UID handed over, as a real
reader's thread does) through the main loop — badge digest, snapshot lookup, the
decision, the session_started event committed to the SQLite outbox (WAL,
synchronous=FULL: fsync'd) — until the relay's pin is driven on (gpiozero MockFactory). The
next tap ends the session (not timed). Then the app runs on to `--memory-taps` taps in
all and its resident set size is read from /proc/self/status.

Results are printed as Markdown for docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpiozero.pins.mock import MockFactory  # noqa: E402

from firmware_pi.bootstrap import build_controller  # noqa: E402
from firmware_pi.clock import SystemClock  # noqa: E402
from firmware_pi.config import ControllerConfig  # noqa: E402
from firmware_pi.reader import SimulatedReader  # noqa: E402
from protocol import (  # noqa: E402
    AuthRequest,
    Event,
    Level,
    MachineSettings,
    PermissionEntry,
    PermissionSnapshot,
    badge_digest,
    encode_config,
)

KEY = bytes(range(32))
RELAY_PIN = 17
MEMBERS = 500  # badges on the snapshot, like a busy lab's laser cutter


class NullLink:
    """Offline: events stay in the outbox (the worst case for it, as nothing is acked)."""

    connected = False

    def start(self) -> None: ...

    def stop(self, timeout: float = 2.0) -> None: ...

    def publish_event(self, event: Event) -> bool:
        return False

    def publish_auth_request(self, request: AuthRequest) -> bool:
        return False

    def publish_status(self) -> bool:
        return False

    def drain(self) -> list:  # type: ignore[type-arg]
        return []


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1000, help="timed taps (>= 1000)")
    parser.add_argument("--memory-taps", type=int, default=10_000, help="taps before RSS")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the outbox goes (default: a temp dir on this disk)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="fablab-bench-", dir=args.data_dir or ROOT))
    uids = [f"04{n:06X}" for n in range(MEMBERS)]
    snapshot = PermissionSnapshot(
        site="bench", machine="laser", controller_id="ctrl-bench", version=1,
        issued_at=int(time.time()), settings=MachineSettings(name="Laser"),
        permissions=tuple(PermissionEntry(badge_digest(KEY, uid), f"m-{i}", Level.AUTONOMOUS)
                          for i, uid in enumerate(uids)),
    )
    (data_dir / "snapshot.json").write_bytes(encode_config(snapshot, KEY))
    config = ControllerConfig.from_dict({
        "controller_id": "ctrl-bench", "site": "bench", "machine": "laser",
        "broker_url": "mqtt://127.0.0.1:1", "key_hex": KEY.hex(), "data_dir": data_dir,
        "auth_timeout_s": 0, "outbox_max_events": 1_000_000,
    })
    pins = MockFactory()
    app = build_controller(config, pin_factory=pins, reader=SimulatedReader(),
                           clock=SystemClock(), link=NullLink())  # type: ignore[arg-type]
    app.read_timeout_s = 0.0
    relay = pins.pin(RELAY_PIN)
    switched_at: list[float] = []
    relay_on = app.hardware.relay.on

    def timed_on() -> None:  # the moment the relay's pin is driven on
        relay_on()
        switched_at.append(time.perf_counter())

    app.hardware.relay.on = timed_on  # type: ignore[method-assign]
    app.begin()
    rss_start = rss_kib()
    latencies: list[float] = []
    total = max(args.taps, args.memory_taps)
    for n in range(total):
        uid = uids[n % MEMBERS]
        start = time.perf_counter()
        app.reader.tap(uid)
        app.step()
        on = relay.state
        elapsed = switched_at[-1] - start
        if not on:
            raise SystemExit(f"tap {n}: relay did not switch on")
        if n < args.taps:
            latencies.append(elapsed)
        app.reader.tap(uid)  # end the session
        app.step()
        if relay.state:
            raise SystemExit(f"tap {n}: relay did not switch off")
    rss_end = rss_kib()
    pending = len(app.outbox)
    app.stop()
    latencies.sort()
    ms = [x * 1000 for x in latencies]

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"outbox: {data_dir} (events kept, nothing acked: {pending})")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| taps timed | {len(ms)} |")
    print(f"| p50 badge→relay | {pct(50):.3f} ms |")
    print(f"| p90 | {pct(90):.3f} ms |")
    print(f"| p99 | {pct(99):.3f} ms |")
    print(f"| max | {ms[-1]:.3f} ms |")
    print(f"| mean | {statistics.fmean(ms):.3f} ms |")
    print(f"| taps in all (start + end each) | {total} sessions, {2 * total} taps |")
    print(f"| RSS after start | {rss_start / 1024:.1f} MiB |")
    print(f"| RSS after all taps | {rss_end / 1024:.1f} MiB |")
    print(f"| peak RSS (ru_maxrss) | "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB |")
    for path in sorted(data_dir.iterdir()):
        path.unlink()
    data_dir.rmdir()


if __name__ == "__main__":
    main()
