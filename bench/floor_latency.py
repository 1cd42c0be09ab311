"""Live floor latency: from a controller's relay switching to the browser's tile changing.

Starts its own Mosquitto (the `mosquitto` binary), the server behind uvicorn on SQLite,
two simulated controllers, and the system Chromium on the live floor page; then taps a
trained badge N times on and off and, for each switch, measures the time from the relay
reaching its state (polled every 2 ms) to the tile's state changing in the page (a
MutationObserver; both clocks are this machine's).

    .venv/bin/python bench/floor_latency.py [--taps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.conftest import (
    ADA_BADGE,
    FLOOR_WATCH_JS,
    launch_chromium,
    relay_switch_ms,
    running_lab,
    tile_change_ms,
)
from tests.fixtures import MosquittoServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=20, help="sessions (each: on, then off)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto")
        broker.start()
        try:
            with running_lab(broker, Path(tmp)) as lab, sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                # Playwright's waiting evaluates script text: the app's CSP would refuse it.
                page = browser.new_page(base_url=lab.url, bypass_csp=True)
                page.goto("/")
                page.wait_for_function(
                    "document.querySelector('#live-status').textContent.includes('Live')"
                )
                page.evaluate(FLOOR_WATCH_JS)
                laser = lab.stations["laser"]
                on_ms, off_ms = [], []
                for _ in range(args.taps):
                    for on, samples in ((True, on_ms), (False, off_ms)):
                        seen = len(page.evaluate("window.__changes"))
                        laser.tap(ADA_BADGE)
                        relay_at = relay_switch_ms(laser, on=on)
                        state = "in_use" if on else "free"
                        samples.append(tile_change_ms(page, state, seen) - relay_at)
                browser.close()
        finally:
            broker.stop()
    for name, samples in (("relay on -> tile in use", on_ms), ("relay off -> tile free", off_ms)):
        ordered = sorted(samples)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"{name}: n={len(ordered)} p50={statistics.median(ordered):.0f} ms "
              f"p90={p90:.0f} ms max={ordered[-1]:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
