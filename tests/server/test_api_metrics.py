"""/metrics: Prometheus' text format, for loopback clients or the holder of the token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from protocol import ControllerState, ControllerStatus, status_topic
from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from server.service_layer import commands as cmds
from tests.server.conftest import SITE

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("192.0.2.7", 50000)
TOKEN = "metrics-token-0123456789"


def _gauge(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_metrics_served_to_a_loopback_client(lab: ServerRuntime) -> None:
    with TestClient(create_app(lab), client=LOOPBACK) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "fablab_ingest_events_total" in response.text


def test_metrics_refused_to_a_remote_client_without_a_token(lab: ServerRuntime) -> None:
    with TestClient(create_app(lab), client=REMOTE) as client:
        response = client.get("/metrics")
    assert response.status_code == 403
    assert "FABLAB_METRICS_TOKEN" in response.json()["detail"]


def test_metrics_refused_to_a_loopback_client_behind_a_proxy(lab: ServerRuntime) -> None:
    with TestClient(create_app(lab), client=LOOPBACK) as client:
        response = client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert response.status_code == 403


def test_metrics_with_a_token_need_it_from_everyone(database_url: str) -> None:
    runtime = ServerRuntime(
        Settings(database_url=database_url, site=SITE, metrics_token=TOKEN), mqtt_enabled=False
    )
    try:
        with TestClient(create_app(runtime), client=LOOPBACK) as client:
            statuses = [
                client.get("/metrics").status_code,
                client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code,
                client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code,
            ]
    finally:
        runtime.dispose()
    assert statuses == [401, 401, 200]


def test_metrics_count_the_controllers_online(lab: ServerRuntime) -> None:
    status = ControllerStatus("laser", ControllerState.ONLINE, "0.1.0", "boot-1", 1.0)
    with TestClient(create_app(lab), client=LOOPBACK) as client:
        before = _gauge(client.get("/metrics").text, "fablab_controllers_online")
        lab.bus.handle(cmds.RecordControllerStatus(status_topic(SITE, "laser"), status.encode()))
        after = _gauge(client.get("/metrics").text, "fablab_controllers_online")
    assert (before, after) == (0.0, 1.0)


def test_metrics_report_the_ingest_queue_depth(lab: ServerRuntime) -> None:
    lab.ingest.submit("fablab/v1/lab/laser/events", b"{}")  # the worker is not started
    with TestClient(create_app(lab), client=LOOPBACK) as client:
        depth = _gauge(client.get("/metrics").text, "fablab_ingest_queue_depth")
    assert depth == 1.0
