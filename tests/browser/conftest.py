"""Browser tests: Playwright drives the system Chromium against a live server.

One lab for the whole module set: a real Mosquitto, the server (SQLite, MQTT ingest)
behind uvicorn on a free port, and two simulated controllers (laser, printer) whose
relays, reader and pins are gpiozero's MockFactory and a SimulatedReader.

Chromium is Debian's (`/usr/bin/chromium`, installed by scripts/test); never
`playwright install`.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from gpiozero.pins.mock import MockFactory

from firmware_pi.app import ControllerApp
from firmware_pi.bootstrap import build_controller
from firmware_pi.config import ControllerConfig
from firmware_pi.reader import SimulatedReader
from protocol import Level
from server.adapters.mail import RecordingMailer
from server.adapters.migrations import upgrade
from server.adapters.orm import UsageSession
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.domain.access import Principal, Role
from server.service_layer import billing_commands as bc
from server.service_layer import commands as cmds
from tests.fixtures import MosquittoServer, free_port, wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_JS = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Screenshots are written to docs/screenshots/ only when asked (FABLAB_SCREENSHOTS=1).
SCREENSHOTS_ENV = "FABLAB_SCREENSHOTS"
KEY_HEX = "7b" * 32
PASSWORD = "browser-test-password"
ADA_BADGE = "04B0B0B001"  # trained on the laser
NORA_BADGE = "04B0B0B002"  # not trained
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
_sites = itertools.count(1)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")


FLOOR_WATCH_JS = """() => {
    window.__changes = [];
    new MutationObserver(() => {
      const tile = document.querySelector('#tiles li[data-machine="laser"]');
      const state = tile && tile.dataset.state;
      const last = window.__changes[window.__changes.length - 1];
      if (state && (!last || last.state !== state)) {
        window.__changes.push({state: state, at: performance.timeOrigin + performance.now()});
      }
    }).observe(document.getElementById('tiles'), {childList: true, subtree: true});
}"""


def relay_switch_ms(station: Station, on: bool, timeout: float = 5.0) -> float:
    """Epoch milliseconds at which the station's relay reached the state (polled at 2 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if station.relay_on == on:
            return time.time() * 1000
        time.sleep(0.002)
    pytest.fail(f"relay never switched {'on' if on else 'off'}")


def tile_change_ms(page: Any, state: str, after_index: int) -> float:
    """Epoch milliseconds at which the laser tile showed the state (the page's clock)."""
    page.wait_for_function(
        f"window.__changes.slice({after_index}).some(c => c.state === '{state}')", timeout=5_000
    )
    changes = page.evaluate("window.__changes")
    return float(next(c["at"] for c in changes[after_index:] if c["state"] == state))


@dataclass
class Station:
    """A machine's simulated controller and its reader."""

    app: ControllerApp[Any]
    reader: SimulatedReader

    @property
    def relay_on(self) -> bool:
        return bool(self.app.hardware.relay.is_active)

    def tap(self, uid: str) -> None:
        self.reader.tap(uid)


@dataclass
class LiveLab:
    url: str
    server: ServerRuntime
    mailer: RecordingMailer
    stations: dict[str, Station] = field(default_factory=dict)

    def uow(self):  # type: ignore[no-untyped-def]
        return self.server.new_uow()


def _seed(bus: Any, site: str) -> None:
    for machine_id, name in (("laser", "Laser cutter"), ("printer", "3D printer")):
        bus.handle(cmds.AddMachine(machine_id, name, site, key_hex=KEY_HEX))
    people = (
        ("mona", "Mona Manager", None),
        ("ada", "Ada Lovelace", ADA_BADGE),
        ("nora", "Nora Newcomer", NORA_BADGE),
        ("tom", "Tom Trainer", None),
        ("bob", "Bob Builder", None),
    )
    for member_id, name, badge in people:
        bus.handle(cmds.AddMember(name, email=f"{member_id}@lab.example", member_id=member_id,
                                  password=PASSWORD))  # fmt: skip
        if badge:
            bus.handle(cmds.RegisterBadge(member_id, badge))
    bus.handle(cmds.SetRoles("mona", frozenset({Role.MANAGER})))
    bus.handle(cmds.GrantTraining("ada", "laser", Level.AUTONOMOUS, granted_by="seed"))
    bus.handle(cmds.GrantTraining("tom", "laser", Level.TRAINER, granted_by="seed"))


def _seed_history(runtime: ServerRuntime, weeks: int = 8) -> None:
    """Past sessions, as if the lab had run for a few weeks (charts, open data, my sessions)."""
    rng = random.Random(9)
    now = datetime.now(UTC)
    with runtime.new_uow() as uow:
        for index in range(weeks * 9):
            started = now - timedelta(days=rng.uniform(1, weeks * 7), hours=rng.uniform(0, 3))
            started = started.replace(hour=rng.choice((9, 10, 14, 15, 16, 18, 19)))
            elapsed = rng.uniform(600, 3 * 3600)
            uow.session.add(
                UsageSession(
                    id=f"history-{index}", machine_id=rng.choice(("laser", "printer")),
                    controller_id="history", member_id=rng.choice(("ada", "tom", "bob", "mona")),
                    reported_member_id="history", level="autonomous", started_at=started,
                    ended_at=started + timedelta(seconds=elapsed), end_reason="badge",
                    elapsed_seconds=elapsed, busy_seconds=elapsed * rng.uniform(0.3, 0.9),
                )
            )  # fmt: skip
        uow.commit()


def _station(broker: MosquittoServer, site: str, machine: str, tmp: Path) -> Station:
    config = ControllerConfig(
        controller_id=machine, site=site, machine=machine, broker_url=broker.url,
        key_hex=KEY_HEX, data_dir=tmp / f"controller-{machine}",
    )  # fmt: skip
    reader = SimulatedReader()
    app = build_controller(config, pin_factory=MockFactory(), reader=reader)
    app.start()
    return Station(app, reader)


class SelfOnlyCsp:
    """ASGI wrapper: every response without a policy of its own gets a
    Content-Security-Policy allowing only the server itself, so that the browser tests
    catch any inline script, style or handler and any asset fetched from elsewhere."""

    POLICY = b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_csp(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", self.POLICY))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_csp if scope["type"] == "http" else send)


@contextmanager
def running_lab(broker: MosquittoServer, tmp: Path) -> Iterator[LiveLab]:
    """Server (uvicorn on a free port), seeded lab and two running controllers."""
    site = f"web{next(_sites)}"
    url = f"sqlite:///{tmp / 'server.sqlite3'}"
    upgrade(url)
    settings = Settings(database_url=url, mqtt_url=broker.url, site=site,
                        mqtt_client_id=f"server-{site}", open_data_min_members=1)  # fmt: skip
    runtime = ServerRuntime(settings)
    mailer = RecordingMailer()
    runtime.mailer = mailer
    runtime.start(wait=10)
    _seed(runtime.bus, site)
    _seed_history(runtime)
    port = free_port()
    config = uvicorn.Config(
        SelfOnlyCsp(create_app(runtime)), host="127.0.0.1", port=port, log_level="warning",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    assert wait_for_port("127.0.0.1", port, 10), "uvicorn did not start"
    lab = LiveLab(f"http://127.0.0.1:{port}", runtime, mailer)
    try:
        for machine in ("laser", "printer"):
            lab.stations[machine] = _station(broker, site, machine, tmp)
        for station in lab.stations.values():
            wait_until(lambda s=station: s.app.controller.snapshot is not None, what="snapshot")
            wait_until(lambda s=station: s.app.link.connected, what="controller link")
        yield lab
    finally:
        for station in lab.stations.values():
            station.app.stop()
        server.should_exit = True
        thread.join(timeout=10)
        runtime.stop()


@pytest.fixture(scope="package")
def live(mosquitto: MosquittoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    with running_lab(mosquitto, tmp_path_factory.mktemp("browser-lab")) as lab:
        yield lab


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# Package scope: Playwright's sync API runs an event loop in this thread until it stops,
# which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium missing: scripts/test installs Debian's chromium package",
                    pytrace=False)  # fmt: skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


NewPage = Callable[..., Any]


@pytest.fixture
def new_page(chromium: Any, live: LiveLab) -> Iterator[NewPage]:
    """`new_page(locale="en", viewport=DESKTOP)`: a page in a fresh browser context."""
    contexts: list[Any] = []

    def make(
        locale: str = "en", viewport: dict[str, int] | None = None, bypass_csp: bool = False
    ) -> Any:
        context = chromium.new_context(
            base_url=live.url, locale=locale, viewport=viewport or DESKTOP,
            extra_http_headers={"Accept-Language": locale},
            bypass_csp=bypass_csp,  # True lets a test inject axe-core under the CSP
        )  # fmt: skip
        # Offline like a lab's closed network: anything but this server is refused.
        context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda r: r.abort())
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def log_in(page: Any, member_id: str, password: str = PASSWORD, next_path: str = "/me") -> None:
    page.goto(f"/login?next={next_path}")
    page.fill("#f-email", f"{member_id}@lab.example")
    page.fill("#f-password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"**{next_path}")


TESS = Principal("tess", frozenset({Role.TREASURER}))
MONA = Principal("mona", frozenset({Role.MANAGER}))
JANUARY = datetime(2025, 1, 14, 9, tzinfo=UTC)  # before every seeded session


@dataclass(frozen=True)
class BillingLab:
    """The billing the browser tests find: January 2025 computed, Ada's statement
    approved and Bob's a draft; contribution claims approved and pending."""

    period_id: int
    approved_statement_id: int
    draft_statement_id: int


def _usage(live: LiveLab, session_id: str, member_id: str, at: datetime, hours: float) -> None:
    with live.uow() as uow:
        uow.sessions.add(
            UsageSession(
                id=session_id, machine_id="laser", controller_id="laser", member_id=member_id,
                reported_member_id=member_id, started_at=at,
                ended_at=at + timedelta(hours=hours), elapsed_seconds=hours * 3600,
                busy_seconds=hours * 1800,
            )
        )  # fmt: skip
        uow.commit()


def _claims(live: LiveLab) -> None:
    bus, policy = live.server.bus, live.server.settings.billing_policy()
    bus.handle(bc.AddContributionType("teaching", "Teaching a class", "hour", "money", 1000,
                                      actor=TESS))  # fmt: skip
    bus.handle(bc.AddContributionType("recipe", "Recipe published", "item", "minutes", 30,
                                      actor=TESS))  # fmt: skip
    for member_id, kind, quantity, decided in (("ada", "teaching", 90, True),
                                               ("bob", "teaching", 60, True),
                                               ("ada", "recipe", 1, False),
                                               ("bob", "recipe", 2, False)):  # fmt: skip
        maker = Principal(member_id, frozenset())
        claim = bus.handle(bc.SubmitClaim(member_id, kind, quantity, f"{kind} by {member_id}",
                                          actor=maker))  # fmt: skip
        if decided:
            bus.handle(bc.DecideClaim(claim, True, "thank you", policy, actor=MONA))


@pytest.fixture(scope="package")
def billing(live: LiveLab) -> BillingLab:
    """Tess the treasurer; the laser at 12.00 an hour from January 2025; January 2025
    computed (Ada's hour approved, Bob's half hour a draft); claims decided and pending."""
    bus, policy = live.server.bus, live.server.settings.billing_policy()
    bus.handle(cmds.AddMember("Tess Treasurer", email="tess@lab.example", member_id="tess",
                              password=PASSWORD))  # fmt: skip
    bus.handle(cmds.SetRoles("tess", frozenset({Role.TREASURER})))
    bus.handle(bc.AddTariff("cutting", "Laser cutting", ("laser",), actor=TESS))
    bus.handle(bc.AddRate("cutting", date(2025, 1, 1), policy, 1200, actor=TESS))
    _usage(live, "january-ada", "ada", JANUARY, 1.0)
    _usage(live, "january-bob", "bob", JANUARY + timedelta(days=1), 0.5)
    period_id = bus.handle(bc.OpenPeriod(date(2025, 1, 1), policy, actor=TESS))
    bus.handle(bc.ComputePeriod(period_id, policy, actor=TESS))
    with live.uow() as uow:
        (ada,) = uow.billing.statements(period_id=period_id, member_id="ada")
        (bob,) = uow.billing.statements(period_id=period_id, member_id="bob")
        ada_id, bob_id = ada.id, bob.id
    bus.handle(bc.ApproveStatement(ada_id, policy, actor=TESS))
    _claims(live)
    return BillingLab(period_id, ada_id, bob_id)
