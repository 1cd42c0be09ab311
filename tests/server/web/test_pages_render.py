"""Every page renders for the roles that may open it; the others get the 403 page."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from tests.server.web.conftest import Login

PUBLIC_PAGES = ("/", "/?kiosk=1", "/login", "/forgot", "/open-data", "/docs", "/redoc")
MAKER_PAGES = ("/me", "/me/sessions", "/me/sessions?month=2026-01", "/me/tokens",
               "/me/password", "/report", "/me/statements", "/me/credits",
               "/me/claims")  # fmt: skip
TRAINER_PAGES = ("/trainer", "/trainer?q=nora", "/trainer/supervised", "/members/nora",
                 "/machines/laser", "/machines/laser?q=nora")  # fmt: skip
MANAGER_PAGES = ("/members", "/members?q=ada", "/members/new", "/members/import",
                 "/members/ada", "/machines", "/machines/laser", "/audit",
                 "/audit?action=member.create", "/stats", "/claims", "/monitoring")  # fmt: skip
TREASURER_PAGES = ("/billing",)


def _statuses(client: TestClient, paths: tuple[str, ...]) -> dict[str, int]:
    return {path: client.get(path, follow_redirects=False).status_code for path in paths}


def test_pages_public_render_anonymous(browser: TestClient) -> None:
    assert _statuses(browser, PUBLIC_PAGES) == dict.fromkeys(PUBLIC_PAGES, 200)


def test_pages_every_page_renders_for_a_manager(browser: TestClient, login: Login) -> None:
    login("mona")
    paths = MAKER_PAGES + TRAINER_PAGES + MANAGER_PAGES
    assert _statuses(browser, paths) == dict.fromkeys(paths, 200)


def test_pages_trainer_pages_render_for_a_trainer(browser: TestClient, login: Login) -> None:
    login("tom")
    paths = MAKER_PAGES + TRAINER_PAGES
    assert _statuses(browser, paths) == dict.fromkeys(paths, 200)


def test_pages_maker_gets_403_page_on_manager_pages(browser: TestClient, login: Login) -> None:
    login("ada")
    for path in MANAGER_PAGES + TRAINER_PAGES:
        response = browser.get(path)
        assert response.status_code == 403, path
        assert "You may not open this page" in response.text
        assert "Nora" not in response.text, path


def test_pages_treasurer_pages_render_for_a_treasurer(browser: TestClient, login: Login) -> None:
    login("tess")
    paths = MAKER_PAGES + TREASURER_PAGES
    assert _statuses(browser, paths) == dict.fromkeys(paths, 200)


def test_pages_treasurer_pages_are_403_for_manager_and_maker(
    browser: TestClient, login: Login
) -> None:
    for member_id in ("mona", "ada"):
        browser.cookies.clear()
        login(member_id)
        assert _statuses(browser, TREASURER_PAGES) == dict.fromkeys(TREASURER_PAGES, 403)


def test_pages_private_redirect_anonymous_to_login(browser: TestClient) -> None:
    for path in MAKER_PAGES:
        response = browser.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path


def test_pages_unknown_path_is_404_page_for_browser_json_for_api(browser: TestClient) -> None:
    page = browser.get("/no-such-page")
    assert page.status_code == 404
    assert "Page not found" in page.text
    api = browser.get("/api/machines/nope", headers={"Accept": "application/json"})
    assert api.json() == {"detail": "no machine nope"}


def test_pages_floor_shows_running_session_to_logged_in(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    lab.bus.handle(cmds.SetOutOfService("laser", True, "belt broken"))
    assert "belt broken" in browser.get("/").text


def test_pages_unhandled_error_is_a_500_page_in_the_browser_language(lab: ServerRuntime) -> None:
    app = create_app(lab)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/api/boom")
    def api_boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/boom", headers={"Accept": "text/html", "Accept-Language": "fr"})
        api = client.get("/api/boom", headers={"Accept": "text/html"})
    assert page.status_code == 500
    assert "Une erreur est survenue" in page.text
    assert "a bug" not in page.text and "Traceback" not in page.text
    assert (api.status_code, api.json()) == (500, {"detail": "internal server error"})
