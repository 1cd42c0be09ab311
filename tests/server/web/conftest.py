"""Web page fixtures: the test lab behind a browser-like client (HTML accepted)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.adapters.mail import RecordingMailer
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from tests.conftest import migrated_sqlite_url
from tests.server.conftest import password_of

HTML = {"Accept": "text/html,application/xhtml+xml"}
LAB_MEMBERS = ("ada", "nora", "tom", "mona", "tess", "root")


@pytest.fixture
def mailer(lab: ServerRuntime) -> RecordingMailer:
    fake = RecordingMailer()
    lab.mailer = fake
    return fake


@pytest.fixture
def browser(lab: ServerRuntime, mailer: RecordingMailer) -> Iterator[TestClient]:
    """A client that asks for HTML like a browser, in English unless told otherwise;
    every lab member has the email `<id>@example.org`."""
    for member_id in LAB_MEMBERS:
        if member_id != "ada":
            lab.bus.handle(cmds.UpdateMember(member_id, email=f"{member_id}@example.org"))
    with TestClient(create_app(lab), headers={**HTML, "Accept-Language": "en"}) as client:
        yield client


Login = Callable[[str], str]


def form_post(client: TestClient, path: str, data: dict[str, str], **kwargs: Any) -> Any:
    """Post a form the way a browser does: first open its page (which sets the form-token
    cookie and field), then post with the token."""
    html = client.get(path).text
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, "no form token on the page"
    return client.post(path, data={"form_token": found.group(1), **data}, **kwargs)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest.fixture
def login(browser: TestClient) -> Login:
    """`login("mona")` logs the client in through the login form; returns the CSRF token."""

    def as_member(member_id: str) -> str:
        response = form_post(
            browser,
            "/login",
            {"email": f"{member_id}@example.org", "password": password_of(member_id),
             "next": "/me/password"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return csrf_of(response.text)

    return as_member


@pytest.fixture
def database_url(tmp_path: Path, sqlite_schema_template: Path) -> str:
    """Pages run on SQLite only: their queries are the repositories' (tested on both
    engines by the API tests), and the page tests stay quick."""
    return migrated_sqlite_url(sqlite_schema_template, tmp_path / "web.sqlite3")
