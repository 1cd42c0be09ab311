"""Online checks and config publishes are timed in the process's Prometheus registry."""

from __future__ import annotations

import threading
import time
import uuid

from protocol import AuthRequest, auth_request_topic
from server.adapters.metrics import REGISTRY
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from tests.server.conftest import SITE

TIMEOUT = 10.0


def _count(metric: str) -> float:
    return REGISTRY.get_sample_value(f"{metric}_count") or 0.0


def test_auth_worker_times_each_answered_check(lab: ServerRuntime) -> None:
    before = _count("fablab_auth_check_seconds")
    answered = threading.Event()
    lab.bus.publish = lambda message: answered.set()
    request = AuthRequest(uuid.uuid4().hex, "laser", "04A1B2C3", time.time())
    lab.auth_worker.submit(auth_request_topic(SITE, "laser"), request.encode())
    lab.auth_worker.start()
    try:
        assert answered.wait(TIMEOUT)
    finally:
        lab.auth_worker.stop()  # joins the worker: its observation is made by then
    assert _count("fablab_auth_check_seconds") == before + 1


def test_config_publish_is_timed_once_per_config_sent(lab: ServerRuntime) -> None:
    before = _count("fablab_snapshot_publish_seconds")
    lab.bus.handle(cmds.SetOutOfService("laser", True, "broken mirror"))
    assert _count("fablab_snapshot_publish_seconds") == before + 1
