"""Login, logout, set-password links, forgot password, password change, language."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.adapters.mail import RecordingMailer
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from tests.server.conftest import password_of
from tests.server.web.conftest import HTML, Login, csrf_of, form_post


def test_login_page_wrong_password_shows_error_next_to_form(browser: TestClient) -> None:
    response = form_post(browser, "/login", {"email": "ada@example.org", "password": "nope"})
    assert response.status_code == 401
    assert "Wrong email or password." in response.text


def test_login_page_opens_session_and_goes_to_next(browser: TestClient) -> None:
    data = {"email": "ada@example.org", "password": password_of("ada"), "next": "/me/password"}
    response = form_post(browser, "/login", data)
    assert response.status_code == 200
    assert response.url.path == "/me/password"
    assert "Ada Lovelace" in response.text


def test_login_page_never_redirects_off_site(browser: TestClient) -> None:
    data = {"email": "ada@example.org", "password": password_of("ada"), "next": "//evil.example/x"}
    response = form_post(browser, "/login", data, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_logout_needs_the_csrf_field(browser: TestClient, login: Login) -> None:
    login("ada")
    assert browser.post("/logout", data={"csrf_token": "forged"}).status_code == 403


def test_logout_ends_the_session(browser: TestClient, login: Login) -> None:
    csrf = login("ada")
    response = browser.post("/logout", data={"csrf_token": csrf})
    assert "You are logged out." in response.text
    assert browser.get("/me/password", follow_redirects=False).status_code == 303


def test_invitation_link_sets_password_once(lab: ServerRuntime, browser: TestClient) -> None:
    lab.bus.handle(cmds.AddMember("Ivy Invited", email="ivy@example.org", member_id="ivy"))
    issued = lab.bus.handle(cmds.IssueAccountLink("ivy"))
    page = browser.get(f"/set-password/{issued.token}")
    assert "Welcome, Ivy Invited" in page.text
    new = {"password": "a-good-password", "confirm": "a-good-password"}
    done = form_post(browser, f"/set-password/{issued.token}", new)
    assert "Your password is set" in done.text
    token = browser.cookies.get("fablab_form") or ""
    again = browser.post(f"/set-password/{issued.token}", data={**new, "form_token": token})
    assert again.status_code == 410
    ivy = {"email": "ivy@example.org", "password": new["password"]}
    login = form_post(browser, "/login", ivy)
    assert "Ivy Invited" in login.text


def test_set_password_page_errors_next_to_field(lab: ServerRuntime, browser: TestClient) -> None:
    issued = lab.bus.handle(cmds.IssueAccountLink("nora"))
    short = {"password": "short", "confirm": "short"}
    response = form_post(browser, f"/set-password/{issued.token}", short)
    assert response.status_code == 400
    assert 'id="f-password-error"' in response.text


def test_forgot_password_answers_the_same_for_unknown_address(
    browser: TestClient, mailer: RecordingMailer
) -> None:
    known = form_post(browser, "/forgot", {"email": "ada@example.org"})
    unknown = form_post(browser, "/forgot", {"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    [mail] = mailer.sent
    assert mail.to == "ada@example.org"
    assert "/set-password/" in mail.body


def test_forgot_password_mail_link_sets_password(
    browser: TestClient, mailer: RecordingMailer
) -> None:
    form_post(browser, "/forgot", {"email": "ada@example.org"})
    path = "/set-password/" + mailer.sent[0].body.split("/set-password/")[1].split()[0]
    new = {"password": "ada-new-password", "confirm": "ada-new-password"}
    assert "Your password is set" in form_post(browser, path, new).text


def test_password_change_page_wrong_current_password(browser: TestClient, login: Login) -> None:
    csrf = login("ada")
    data = {"csrf_token": csrf, "current": "wrong", "password": "x" * 12, "confirm": "x" * 12}
    response = browser.post("/me/password", data=data)
    assert response.status_code == 400
    assert "The current password is wrong." in response.text


def test_password_change_page_changes_password(browser: TestClient, login: Login) -> None:
    csrf = login("ada")
    data = {"csrf_token": csrf, "current": password_of("ada"), "password": "y" * 12,
            "confirm": "y" * 12}  # fmt: skip
    response = browser.post("/me/password", data=data)
    assert "Your password is changed." in response.text
    assert csrf_of(response.text)


def test_password_change_page_ends_the_members_other_logins_and_keeps_this_one(
    lab: ServerRuntime, browser: TestClient, login: Login
) -> None:
    with TestClient(create_app(lab), headers={**HTML, "Accept-Language": "en"}) as other:
        form_post(other, "/login", {"email": "ada@example.org", "password": password_of("ada")})
        assert other.get("/me", follow_redirects=False).status_code == 200
        csrf = login("ada")
        data = {"csrf_token": csrf, "current": password_of("ada"), "password": "z" * 12,
                "confirm": "z" * 12}  # fmt: skip
        assert "Your password is changed." in browser.post("/me/password", data=data).text

        assert other.get("/me", follow_redirects=False).status_code == 303
        assert browser.get("/me", follow_redirects=False).status_code == 200


def test_password_change_page_limits_wrong_current_passwords(
    browser: TestClient, login: Login
) -> None:
    csrf = login("ada")
    data = {"csrf_token": csrf, "current": "wrong", "password": "x" * 12, "confirm": "x" * 12}
    answers = [browser.post("/me/password", data=data) for _ in range(6)]
    assert "Too many wrong passwords: try again later." in answers[-1].text


def test_language_switch_is_remembered(browser: TestClient) -> None:
    browser.get("/lang/fr?next=/login")
    assert 'lang="fr"' in browser.get("/login").text
    assert "Mot de passe" in browser.get("/login").text


def test_language_from_accept_language(browser: TestClient) -> None:
    page = browser.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert '<html lang="fr">' in page.text


def test_login_form_posted_without_the_form_token_is_refused(browser: TestClient) -> None:
    browser.get("/login")
    data = {"email": "ada@example.org", "password": password_of("ada")}
    response = browser.post("/login", data={**data, "form_token": "forged"})
    assert response.status_code == 403
    assert browser.get("/me", follow_redirects=False).status_code == 303
