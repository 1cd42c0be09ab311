"""Structured logs: one JSON object per line (for journald / log shippers) or plain text,
each line of a controller's threads tagged with its controller id."""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

# The controller the current thread works for (each thread starts with its own context:
# set by the threads of one controller, see bind_controller).
_controller_id: ContextVar[str | None] = ContextVar("fablab_controller_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts": …, "level": …, "logger": …, "msg": …}` plus any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def bind_controller(controller_id: str) -> None:
    """Tag every log line the calling thread writes from now on with `controller_id`
    (called by each thread of a controller: its main loop, its MQTT network thread)."""
    _controller_id.set(controller_id)


class ControllerLogFilter(logging.Filter):
    """A handler filter: on a controller's threads, sets `record.controller_id` and,
    with `prefix`, starts the message with `[<controller id>] ` (several controllers
    share one process in the demo); other lines pass unchanged."""

    def __init__(self, *, prefix: bool = True) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_controller_tagged", False):
            return True  # tagged by another handler's filter already
        record._controller_tagged = True
        controller_id = _controller_id.get()
        if controller_id is not None:
            record.controller_id = controller_id
            if self.prefix:  # ids are slugs: no % in them
                record.msg = f"[{controller_id}] {record.msg}"
        return True


def tag_controller_logs(logger: logging.Logger | None = None, *, prefix: bool = True) -> None:
    """Add a ControllerLogFilter to each handler of `logger` (the root logger) that has
    none yet."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ControllerLogFilter) for f in handler.filters):
            handler.addFilter(ControllerLogFilter(prefix=prefix))


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the process (the CLI's job, not a library's)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    # JSON lines carry the id as a field of their own; text lines start with it.
    handler.addFilter(ControllerLogFilter(prefix=fmt != "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
