"""Server-rendered HTML pages."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dashboards import TEMPLATES_DIR
from server.api.deps import RuntimeDep, UowDep
from server.api.routes.machines import list_machines
from server.api.routes.sessions import list_sessions

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

STATE_LABELS = {
    "free": "Free",
    "in_use": "In use",
    "offline": "Offline",
    "out_of_service": "Out of service",
}


@router.get("/", response_class=HTMLResponse)
def floor_page(request: Request, uow: UowDep, runtime: RuntimeDep) -> HTMLResponse:
    """The live floor: every machine's state and the latest sessions."""
    return templates.TemplateResponse(
        request,
        "floor.html",
        {
            "site": runtime.settings.site,
            "now": datetime.now(UTC).strftime("%H:%M:%S UTC"),
            "machines": list_machines(uow, None, runtime),
            "sessions": list_sessions(
                uow, None, machine=None, member=None, open_only=False, limit=15, offset=0
            ).items,
            "state_labels": STATE_LABELS,
        },
    )
