"""One journey per role in a real browser, against the live server and controllers."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from protocol import badge_digest
from tests.browser.conftest import (
    ADA_BADGE,
    FLOOR_WATCH_JS,
    KEY_HEX,
    NORA_BADGE,
    LiveLab,
    NewPage,
    log_in,
    relay_switch_ms,
    tile_change_ms,
    wait_until,
)

pytestmark = pytest.mark.browser


def _tile(page: Any, machine: str) -> Any:
    return page.locator(f'#tiles li[data-machine="{machine}"]')


def test_browser_invited_member_sets_password_and_logs_in(
    live: LiveLab, new_page: NewPage
) -> None:
    manager = new_page()
    log_in(manager, "mona", next_path="/members/new")
    manager.fill("#f-name", "Ivy Invited")
    manager.fill("#f-email", "ivy@lab.example")
    manager.click("main form button[type=submit]")
    link = manager.input_value("#invite-link")
    assert "/set-password/" in link
    assert any(mail.to == "ivy@lab.example" and link in mail.body for mail in live.mailer.sent)

    ivy = new_page()
    ivy.goto(link)
    ivy.fill("#f-password", "ivy-chosen-password")
    ivy.fill("#f-confirm", "ivy-chosen-password")
    ivy.click("main button[type=submit]")
    ivy.wait_for_url("**/login?done=password")
    ivy.fill("#f-email", "ivy@lab.example")
    ivy.fill("#f-password", "ivy-chosen-password")
    ivy.click("main button[type=submit]")
    ivy.wait_for_url("**/me")
    assert "Ivy Invited" in ivy.inner_text("header")


def test_browser_maker_sees_session_appear_after_a_tap(live: LiveLab, new_page: NewPage) -> None:
    page = new_page()
    log_in(page, "ada", next_path="/")
    laser = live.stations["laser"]
    laser.tap(ADA_BADGE)
    wait_until(lambda: laser.relay_on, what="relay on for Ada")
    tile = _tile(page, "laser")
    tile.locator("text=Ada Lovelace").wait_for()
    assert tile.get_attribute("data-state") == "in_use"
    laser.tap(ADA_BADGE)
    wait_until(lambda: not laser.relay_on, what="relay off")
    page.goto("/me/sessions")
    page.locator("#my-sessions", has_text="Laser cutter").wait_for()


def test_browser_trainer_grants_training_and_next_tap_is_granted(
    live: LiveLab, new_page: NewPage
) -> None:
    laser = live.stations["laser"]
    laser.tap(NORA_BADGE)
    time.sleep(0.3)
    assert not laser.relay_on, "Nora is not trained yet"
    page = new_page()
    log_in(page, "tom", next_path="/trainer")
    page.fill("#f-q", "Nora")
    page.click("main form[role=search] button")
    page.click("text=Nora Newcomer")
    page.select_option("#g-type-nora", "laser")
    page.select_option("#g-level-nora", "autonomous")
    page.click("main section form button:has-text('Grant')")
    page.locator(".alert.ok").wait_for()
    key = bytes.fromhex(KEY_HEX)

    def nora_on_snapshot() -> bool:
        snapshot = laser.app.controller.snapshot
        return snapshot is not None and snapshot.lookup(badge_digest(key, NORA_BADGE)) is not None

    wait_until(nora_on_snapshot, what="the grant reaching the controller")
    laser.tap(NORA_BADGE)
    wait_until(lambda: laser.relay_on, what="relay on for the newly trained badge")
    laser.tap(NORA_BADGE)
    wait_until(lambda: not laser.relay_on, what="relay off")


def test_browser_manager_enrolls_badge_by_tapping_and_puts_machine_out_of_service(
    live: LiveLab, new_page: NewPage
) -> None:
    page = new_page()
    log_in(page, "mona", next_path="/members/bob")
    page.select_option("#f-enroll-machine", "printer")
    page.click("text=Wait for the badge")
    page.locator("#enroll-status[data-poll-url]").wait_for()
    printer = live.stations["printer"]
    wait_until(lambda: printer.app.controller.enrolling, what="controller in enroll mode")
    printer.tap("04E1E1E1E1")
    page.locator("#enroll-status.ok").wait_for()
    assert "04E1E1E1E1" in page.inner_text("#enroll-status")
    page.goto("/members/bob")
    assert "04E1E1E1E1" in page.inner_text("#badges")

    page.goto("/machines/printer")
    page.fill("#f-reason", "nozzle clogged")
    page.click("text=Put out of service")
    page.locator(".alert.ok").wait_for()
    page.goto("/")
    _tile(page, "printer").locator("text=nozzle clogged").wait_for()
    printer.tap(ADA_BADGE)
    time.sleep(0.3)
    assert not printer.relay_on
    page.goto("/machines/printer")
    page.click("text=Put back in service")
    page.locator(".alert.ok").wait_for()


def test_browser_maker_gets_403_page_on_manager_pages(new_page: NewPage) -> None:
    page = new_page()
    log_in(page, "ada")
    for path in ("/members", "/machines/laser", "/audit", "/members/nora"):
        response = page.goto(path)
        assert response is not None and response.status == 403
        assert "You may not open this page" in page.inner_text("main")
        assert "Nora" not in page.inner_text("main")


def test_browser_live_floor_shows_a_tap_within_a_second_of_the_relay(
    live: LiveLab, new_page: NewPage, record_property: Any
) -> None:
    """Measured from the relay switching on to the tile showing the session; the figure
    goes to docs/benchmarks.md (bench/floor_latency.py repeats it). Waits up to 5 s.
    (Playwright's waiting evaluates script text, which the CSP forbids: bypassed here;
    the floor under the CSP is tested in test_pages_a11y.)"""
    page = new_page(bypass_csp=True)
    page.goto("/")
    page.wait_for_function("document.querySelector('#live-status').textContent.includes('Live')")
    page.evaluate(FLOOR_WATCH_JS)
    laser = live.stations["laser"]
    laser.tap(ADA_BADGE)
    relay_at = relay_switch_ms(laser, on=True)
    latency_ms = tile_change_ms(page, "in_use", 0) - relay_at
    record_property("floor_latency_ms", round(latency_ms, 1))
    print(f"live floor: tile in use {latency_ms:.0f} ms after the relay switched on")
    laser.tap(ADA_BADGE)
    wait_until(lambda: not laser.relay_on, what="relay off")


def test_browser_page_in_both_languages_switches_and_remembers(new_page: NewPage) -> None:
    page = new_page("en")
    page.goto("/login")
    page.click("a[hreflang=fr]")
    page.wait_for_url(re.compile(r".*/login$"))
    assert page.locator("html").get_attribute("lang") == "fr"
    page.goto("/open-data")
    assert "Données ouvertes" in page.inner_text("h1")
