"""422 answers that say what is wrong without echoing secrets or huge inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO = 100
# Fields whose value is never repeated back: passwords, tokens, keys.
SECRET_PARTS = ("password", "token", "secret", "key")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "…"


def _is_secret(loc: Sequence[Any]) -> bool:
    return any(
        isinstance(part, str) and any(s in part.lower() for s in SECRET_PARTS) for part in loc
    )


def safe_error(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as FastAPI shapes it (type, loc, msg), with the offending input
    only when it is a short scalar of a field that is not secret."""
    loc = [part if isinstance(part, int) else _clip(str(part)) for part in error.get("loc", ())]
    safe: dict[str, Any] = {
        "type": str(error.get("type", "value_error")),
        "loc": loc,
        "msg": _clip(str(error.get("msg", ""))),
    }
    value = error.get("input")
    if not _is_secret(loc) and (value is None or isinstance(value, bool | int | float)):
        safe["input"] = value
    elif not _is_secret(loc) and isinstance(value, str):
        safe["input"] = _clip(value)
    return safe


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": [safe_error(e) for e in exc.errors()]})
