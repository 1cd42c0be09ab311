"""`fablab demo` as a user runs it: one command, a lab that comes alive, Ctrl-C stops it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.seed import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD
from tests.e2e.conftest import wait_until
from tests.fixtures import MosquittoServer, free_port


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _login(port: int) -> dict[str, str]:
    """Log in as the demo admin, as a browser would: cookie plus CSRF token."""
    body = json.dumps({"email": DEMO_ADMIN_EMAIL, "password": DEMO_ADMIN_PASSWORD}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/login",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        csrf = json.load(response)["csrf_token"]
    return {"Cookie": cookie, "X-CSRF-Token": csrf}


def _answers(port: int) -> bool:
    try:
        _get(port, "/api/health")
    except OSError:
        return False
    return True


class Demo:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "server.cli", "demo", "--port", str(self.port)]
        command += ["--data-dir", str(data_dir), "--pace", "0.3", *extra]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as a user stops it; returns exit code and output."""
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=20)
        return self.process.returncode, output


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "data")
    try:
        wait_until(lambda: _answers(running.port) or running.process.poll() is not None, 30)
        assert running.process.poll() is None, running.process.communicate()[0]
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.communicate()


def test_demo_machines_come_into_use_and_sessions_grow(demo: Demo) -> None:
    machines = _get(demo.port, "/api/machines")
    assert len(machines) >= 4
    wait_until(
        lambda: any(m["state"] == "in_use" for m in _get(demo.port, "/api/machines")),
        timeout=30,
        what="a machine in use",
    )
    first = _get(demo.port, "/api/sessions")["total"]
    wait_until(lambda: _get(demo.port, "/api/sessions")["total"] > first, 30, "more sessions")
    admin = _login(demo.port)
    wait_until(lambda: _get(demo.port, "/api/denials", admin)["total"] > 0, 30, "a refused tap")
    named = _get(demo.port, "/api/sessions", admin)["items"]
    assert all(s["member_name"] for s in named), "the admin sees who worked"
    wait_until(
        lambda: any(s["busy_seconds"] > 0 for s in _get(demo.port, "/api/sessions")["items"]),
        30,
        "busy time from the simulated current sensors",
    )
    code, output = demo.interrupt()
    assert code == 0, output
    assert "demo running on http://127.0.0.1:" in output
    assert "Traceback" not in output
    # Issue 10: no other machine's retained messages reach a controller, no broker crash,
    # and every controller line names its controller.
    assert "unexpected topic" not in output
    assert "dictionary changed size" not in output
    assert re.search(r"firmware_pi\.controller: \[[a-z0-9-]+\] session \S+ started", output)


def test_demo_reuses_its_data_dir_on_next_run(tmp_path: Path, demo: Demo) -> None:
    wait_until(lambda: _get(demo.port, "/api/sessions")["total"] > 0, 30, "a session")
    code, output = demo.interrupt()
    assert code == 0, output
    again = Demo(tmp_path / "data")
    try:
        wait_until(lambda: _answers(again.port), 30, "second demo up")
        assert len(_get(again.port, "/api/machines")) == 5, "seeded once, not twice"
        assert _get(again.port, "/api/sessions")["total"] > 0, "earlier sessions kept"
    finally:
        again.interrupt()


def test_demo_runs_on_an_external_broker(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    demo = Demo(tmp_path / "data", "--broker", mosquitto.url)
    try:
        wait_until(lambda: _answers(demo.port) or demo.process.poll() is not None, 30)
        wait_until(
            lambda: any(m["state"] == "in_use" for m in _get(demo.port, "/api/machines")),
            timeout=30,
            what="a machine in use through Mosquitto",
        )
        assert _get(demo.port, "/api/health")["mqtt_connected"]
    finally:
        code, output = demo.interrupt()
    assert code == 0, output
    assert "embedded MQTT broker" not in output


def _post(port: int, path: str, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"", headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_demo_treasurer_closes_last_month(demo: Demo) -> None:
    admin = _login(demo.port)
    wait_until(lambda: _get(demo.port, "/api/billing/periods", admin), 90, "last month's period")
    (period,) = _get(demo.port, "/api/billing/periods", admin)
    assert period["status"] == "open"
    closed = _post(demo.port, f"/api/billing/periods/{period['id']}/close", admin)
    assert closed["status"] == "closed" and closed["statements"] > 0
    statements = _get(demo.port, f"/api/billing/statements?period_id={period['id']}", admin)
    assert all(s["status"] == "approved" and s["number"] for s in statements)
    fec = urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{demo.port}/api/billing/periods/{period['id']}/export?format=fec",
            headers=admin,
        ),
        timeout=10,
    ).read()
    assert fec.decode().startswith("JournalCode|JournalLib|EcritureNum")
    code, output = demo.interrupt()
    assert code == 0 and "Traceback" not in output, output
