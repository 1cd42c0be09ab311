"""Log lines of a controller say which controller wrote them (the demo runs five in one
process)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_pi.bootstrap import build_controller
from firmware_pi.logs import ControllerLogFilter, JsonFormatter, bind_controller
from firmware_pi.reader import SimulatedReader
from tests.firmware_pi.pi_helpers import (
    ALICE,
    CONTROLLER_ID,
    FakeLink,
    make_config,
    signed_config,
    wait_until,
)


@pytest.fixture
def tagged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    tag = ControllerLogFilter()
    caplog.handler.addFilter(tag)
    yield caplog
    caplog.handler.removeFilter(tag)


def _log_in_thread(controller_id: str | None, message: str) -> None:
    def work() -> None:
        if controller_id is not None:
            bind_controller(controller_id)
        logging.getLogger("firmware_pi.test").info(message)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_controller_log_filter_prefixes_lines_of_a_bound_thread_only(
    tagged: pytest.LogCaptureFixture,
) -> None:
    _log_in_thread("laser", "badge %s denied")
    _log_in_thread(None, "server line")

    assert [r.getMessage() for r in tagged.records] == ["[laser] badge %s denied", "server line"]
    assert [getattr(r, "controller_id", None) for r in tagged.records] == ["laser", None]


def test_json_log_line_carries_the_controller_id_as_a_field() -> None:
    record = logging.LogRecord("firmware_pi.app", logging.INFO, __file__, 1, "started", (), None)
    holder: list[logging.LogRecord] = []

    def work() -> None:
        bind_controller("cnc")
        ControllerLogFilter(prefix=False).filter(record)
        holder.append(record)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()

    line = json.loads(JsonFormatter().format(holder[0]))
    assert (line["msg"], line["controller_id"]) == ("started", "cnc")


def test_controller_app_loop_thread_tags_its_log_lines(
    tmp_path: Path, tagged: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.snapshot_path.write_bytes(signed_config())
    reader = SimulatedReader()
    app = build_controller(config, pin_factory=MockFactory(), reader=reader, link=FakeLink())
    app.start()
    try:
        reader.tap(ALICE)
        wait_until(lambda: any("started by member" in r.getMessage() for r in tagged.records))
    finally:
        app.stop()

    started = [r.getMessage() for r in tagged.records if "started by member" in r.getMessage()]
    assert started[0].startswith(f"[{CONTROLLER_ID}] session ")
