"""The live floor: a tile per machine, pushed to browsers over Server-Sent Events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.api.deps import RuntimeDep, UowDep
from server.api.routes.machines import machines_public
from server.api.routes.sessions import list_sessions
from server.bootstrap import ServerRuntime
from server.web.i18n import N_, gettext_for
from server.web.session import PageUser, WebUser
from server.web.templating import page_context, render, render_text

router = APIRouter(include_in_schema=False)

STATE_LABELS = {
    "free": N_("Free"),
    "in_use": N_("In use"),
    "offline": N_("Offline"),
    "out_of_service": N_("Out of service"),
}
# Another server process may have ingested the event (shared subscription): the stream
# also re-reads the floor this often (from the runtime's floor cache, reloaded once it is
# FABLAB_FLOOR_CACHE_MAX_AGE_S old), and sends it if it changed.
REREAD_S = 2.0
KEEPALIVE_S = 15.0


class FloorNotifier:
    """Wakes the open floor streams when the message bus has handled a command."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def __call__(self, _cmd: object) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed: the stream is gone
                self.unsubscribe((loop, event))

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        return waiter

    def unsubscribe(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._waiters)


def notifier_of(runtime: ServerRuntime) -> FloorNotifier:
    """The runtime's notifier, registered on its bus the first time it is asked for."""
    found = getattr(runtime, "floor_notifier", None)
    if found is None:
        found = FloorNotifier()
        runtime.floor_notifier = found  # type: ignore[attr-defined]
        runtime.bus.listeners.append(found)
    return found


def _labels(locale: str) -> dict[str, str]:
    _ = gettext_for(locale)
    return {state: _(label) for state, label in STATE_LABELS.items()}


def _tiles_context(runtime: ServerRuntime, user: WebUser | None) -> dict[str, Any]:
    viewer = user.principal if user else None
    return {
        "machines": machines_public(runtime.floor.read(), viewer),
        "now": datetime.now(UTC),
    }


@router.get("/", response_class=HTMLResponse)
def floor_page(
    request: Request, uow: UowDep, runtime: RuntimeDep, user: PageUser, kiosk: bool = False
) -> HTMLResponse:
    """Every machine's state (who works since when: logged-in viewers only) and the
    latest sessions; `?kiosk=1` for a wall screen."""
    viewer = user.principal if user else None
    context = _tiles_context(runtime, user)
    sessions = list_sessions(
        uow, viewer, machine=None, member=None, open_only=False, limit=15, offset=0
    ).items
    context.update(
        kiosk=kiosk,
        sessions=sessions,
        machine_names={m.id: m.name for m in context["machines"]},
        state_labels=_labels(page_context(request)["locale"]),
    )
    return render(request, "floor.html", context)


def _render_tiles(request: Request, runtime: ServerRuntime, user: WebUser | None) -> str:
    """The tiles' HTML; elapsed times are left to the page's script, so that the same
    floor renders the same text and only a change is sent. Rendered once per floor
    reading, language and kind of viewer (who works is shown to logged-in members only),
    then shared by every open stream."""
    reading = runtime.floor.read()
    context = page_context(request)
    key = f"tiles:{context['locale']}:{'member' if user else 'anonymous'}"
    cached = reading.renders.get(key)
    if cached is not None:
        return cached.decode()
    context.update(machines=machines_public(reading, user.principal if user else None))
    context["now"] = None
    context["state_labels"] = _labels(context["locale"])
    html = render_text(context["locale"], "partials/tiles.html", context)
    reading.renders[key] = html.encode()
    return html


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


@router.get("/floor/events")
async def floor_events(request: Request, runtime: RuntimeDep, user: PageUser) -> StreamingResponse:
    """Server-Sent Events: `tiles` (the tiles' HTML) at once, then on every change."""
    notifier = notifier_of(runtime)

    async def stream() -> AsyncIterator[str]:
        waiter = notifier.subscribe()
        _, changed = waiter
        last, quiet = "", 0.0
        try:
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                changed.clear()
                html = await run_in_threadpool(_render_tiles, request, runtime, user)
                if html != last:
                    last, quiet = html, 0.0
                    yield _sse("tiles", html)
                elif quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                try:
                    await asyncio.wait_for(changed.wait(), timeout=REREAD_S)
                except TimeoutError:
                    quiet += REREAD_S
        finally:
            notifier.unsubscribe(waiter)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
