"""What each role does from its pages goes through the service layer and shows."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from protocol import EventKind
from server.adapters.mail import RecordingMailer
from server.adapters.orm import utcnow
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.web.floor import FloorNotifier
from tests.server.conftest import EventFactory, Ingest
from tests.server.web.conftest import Login


def _post(client: TestClient, path: str, csrf: str, **data: str):  # type: ignore[no-untyped-def]
    return client.post(path, data={"csrf_token": csrf, **data})


def test_manager_adds_member_and_gets_a_link_to_copy(
    browser: TestClient, login: Login, mailer: RecordingMailer
) -> None:
    csrf = login("mona")
    page = _post(browser, "/members/new", csrf, name="Ivy New", email="ivy@example.org")
    link = re.search(r'id="invite-link" type="text" readonly value="([^"]+)"', page.text)
    assert link and "/set-password/" in link.group(1)
    assert mailer.sent[0].to == "ivy@example.org"
    assert link.group(1) in mailer.sent[0].body


def test_manager_add_member_errors_next_to_field(browser: TestClient, login: Login) -> None:
    csrf = login("mona")
    page = _post(browser, "/members/new", csrf, name="", email="ada@example.org")
    assert page.status_code == 400
    assert 'id="f-name-error"' in page.text


def test_manager_imports_csv_with_per_line_report_and_links(
    browser: TestClient, login: Login
) -> None:
    csrf = login("mona")
    data = b"name,email\nIvy Import,ivy@example.org\nBad Email,bad@\n"
    page = browser.post(
        "/members/import", data={"csrf_token": csrf}, files={"file": ("m.csv", data, "text/csv")}
    )
    assert page.status_code == 200
    assert "1 members imported, 1 lines with errors" in page.text
    assert page.text.count("/set-password/") == 1


def test_manager_puts_machine_out_of_service(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("mona")
    page = _post(browser, "/machines/laser/out-of-service", csrf, reason="belt broken")
    assert "The machine is out of service." in page.text
    with lab.new_uow() as uow:
        machine = uow.machines.get("laser")
        assert machine is not None
        assert (machine.out_of_service, machine.out_of_service_reason) == (True, "belt broken")


def test_manager_settings_form_rejects_non_numbers_next_to_field(
    browser: TestClient, login: Login
) -> None:
    csrf = login("mona")
    page = _post(browser, "/machines/laser/settings", csrf, idle_timeout_s="soon")
    assert page.status_code == 400
    assert 'id="f-idle_timeout_s-error"' in page.text


def test_manager_starts_badge_enrollment_on_a_machine(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("mona")
    page = _post(browser, "/members/nora/enroll", csrf, machine="laser")
    assert "data-poll-url=\"/api/machines/laser/enroll/" in page.text
    with lab.new_uow() as uow:
        assert uow.enrollments.pending("laser", utcnow()) is not None


def test_trainer_grants_and_revokes_from_member_page(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    csrf = login("tom")
    page = _post(browser, "/members/nora/trainings", csrf, training_type="laser",
                 level="autonomous")  # fmt: skip
    assert "Training granted." in page.text
    with lab.new_uow() as uow:
        assert uow.trainings.current("nora", "laser") is not None
    page = _post(browser, "/members/nora/trainings/laser/revoke", csrf)
    assert "Training revoked." in page.text


def test_trainer_cannot_grant_trainer_level(browser: TestClient, login: Login) -> None:
    csrf = login("tom")
    page = _post(browser, "/members/nora/trainings", csrf, training_type="laser", level="trainer")
    assert page.status_code == 403
    assert "You may not open this page" in page.text


def test_maker_reports_a_problem(lab: ServerRuntime, browser: TestClient, login: Login) -> None:
    csrf = login("ada")
    page = _post(browser, "/report", csrf, machine="laser", text="smoke from the tube")
    assert "Thank you" in page.text
    with lab.new_uow() as uow:
        [report] = uow.problem_reports.of_machine("laser")
        assert (report.member_id, report.text) == ("ada", "smoke from the tube")


def test_maker_creates_token_shown_once_then_revokes(browser: TestClient, login: Login) -> None:
    csrf = login("ada")
    page = _post(browser, "/me/tokens", csrf, name="my script")
    token = re.search(r'id="new-token" type="text" readonly value="([^"]+)"', page.text)
    assert token
    headers = {"Authorization": f"Bearer {token.group(1)}", "Accept": "application/json"}
    assert browser.get("/api/me", headers=headers).json()["id"] == "ada"
    token_id = re.search(r'action="/me/tokens/(\d+)/revoke"', page.text)
    assert token_id
    _post(browser, f"/me/tokens/{token_id.group(1)}/revoke", csrf)
    assert browser.get("/api/me", headers=headers).status_code == 401


def test_floor_notifier_wakes_a_stream_when_the_bus_handles_a_command(
    lab: ServerRuntime,
) -> None:
    notifier = FloorNotifier()
    lab.bus.listeners.append(notifier)

    async def wait_for_change() -> bool:
        _, event = waiter = notifier.subscribe()
        try:
            await asyncio.to_thread(lab.bus.handle, cmds.SetOutOfService("laser", True, "x"))
            await asyncio.wait_for(event.wait(), timeout=1.0)
            return True
        finally:
            notifier.unsubscribe(waiter)

    # A thread of its own: the session's Playwright may hold this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, wait_for_change()).result(timeout=10)
    assert notifier.streams == 0


def test_api_docs_are_served_offline_with_security_schemes(browser: TestClient) -> None:
    docs = browser.get("/docs").text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower()
    assert browser.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert browser.get("/static/vendor/redoc/redoc.standalone.js").status_code == 200
    schemes = browser.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    cookie, csrf = schemes["cookieAuth"], schemes["csrfHeader"]
    assert (cookie["in"], csrf["name"]) == ("cookie", "X-CSRF-Token")


def test_pages_have_no_inline_script_style_or_handler(browser: TestClient, login: Login) -> None:
    login("mona")
    for path in ("/", "/members/ada", "/machines/laser", "/stats", "/docs", "/me/tokens"):
        html = browser.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), path


def test_manager_sees_controller_faults_on_machine_page(
    browser: TestClient, login: Login, ingest: Ingest, events: EventFactory
) -> None:
    ingest(events(EventKind.FAULT, code="reader", message="RFID reader not answering"))
    login("mona")
    page = browser.get("/machines/laser").text
    assert "RFID reader not answering" in page


def test_manager_member_list_shows_trainings_and_account_state(
    browser: TestClient, login: Login
) -> None:
    login("mona")
    page = browser.get("/members?q=ada").text
    assert "Laser cutter (Autonomous)" in page
    assert "active account" in page


def test_manager_settings_form_shows_zero_values(browser: TestClient, login: Login) -> None:
    login("mona")
    page = browser.get("/machines/laser").text
    assert re.search(r'id="f-idle_timeout_s" name="idle_timeout_s" type="number" value="0"', page)
