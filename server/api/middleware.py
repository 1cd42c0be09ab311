"""Pure ASGI middleware: bounded request bodies, JSON text that is valid Unicode, and the
security headers of every answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


async def _send_json(send: Send, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    """Raised into the application when the body passes its bound (already answered 413)."""


class BodyLimitMiddleware:
    """Answer 413 as soon as a request body passes its bound, without reading the rest.

    The declared Content-Length is checked before anything is read; a chunked body (no
    Content-Length) is counted as it streams in. `limits` gives paths a bound of their own.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            return
        received, started, answered = 0, False, False

        async def bounded_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        await self._too_large(send, limit)
                        answered = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the app's own answer to the interrupted read is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except _BodyTooLargeError:
            if not answered:
                raise

    @staticmethod
    async def _too_large(send: Send, limit: int) -> None:
        detail = f"the request body is larger than {_size(limit)}"
        await _send_json(send, 413, {"detail": detail})


def _size(n: int) -> str:
    """2097152 -> '2 MB' (binary units, as the rest of the lab's messages)."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def has_lone_surrogate(body: bytes) -> bool:
    """True if the JSON text escapes a UTF-16 surrogate that is not part of a pair
    (e.g. "\\ud800"): valid JSON, but not a Unicode string any database can store."""
    if b"\\u" not in body:
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False  # not JSON at all: the route's validation says so
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class RejectLoneSurrogatesMiddleware:
    """Answer 422 to a JSON body holding a lone surrogate, before any route sees it.

    The body is read whole (BodyLimitMiddleware, outside this one, bounds it), checked,
    then handed to the application unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: nothing to check
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if has_lone_surrogate(body):
            error = {
                "type": "json_invalid",
                "loc": ["body"],
                "msg": "JSON text holds a lone surrogate (\\ud800-\\udfff): not valid Unicode",
            }
            await _send_json(send, 422, {"detail": [error]})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeadersMiddleware:
    """Headers on every answer: CSP (own origin only, no framing), no MIME sniffing, no
    referrer; nothing but static assets is stored by browsers or proxies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # A route that needs another policy sets its own (ReDoc's worker), kept below.
        added = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        # Pages and API answers carry personal data (sessions, exports, member lists);
        # only the shipped static assets may be cached.
        no_store = not path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in added if n not in names]
                if no_store and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
