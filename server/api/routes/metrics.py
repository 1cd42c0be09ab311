"""`/metrics`: the server's figures for Prometheus (text exposition format).

Who may read them (docs/operations.md): with FABLAB_METRICS_TOKEN set, whoever sends
`Authorization: Bearer <token>`; without it, clients on the loopback interface only, and
not through a reverse proxy (a request carrying a forwarding header is refused: behind a
local nginx every client would otherwise come from the loopback address).
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.adapters.metrics import CONTROLLERS_ONLINE, INGEST_QUEUE_DEPTH, REGISTRY
from server.api.deps import RuntimeDep
from server.api.routes.machines import current_floor
from server.bootstrap import ServerRuntime
from server.config import Settings

router = APIRouter(include_in_schema=False)

_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_reader(request: Request, settings: Settings) -> None:
    """Raise 401/403 unless the request may read the metrics."""
    if settings.metrics_token:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            sent.strip().encode(), settings.metrics_token.encode()
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "send 'Authorization: Bearer <FABLAB_METRICS_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return
    forwarded = any(name in request.headers for name in _FORWARDING_HEADERS)
    if forwarded or not _is_loopback(request.client.host if request.client else ""):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "metrics are served to direct loopback clients only: set FABLAB_METRICS_TOKEN "
            "to scrape them from another host or through a proxy",
        )


async def refresh_gauges(runtime: ServerRuntime) -> None:
    """Set the gauges read at scrape time: controllers online, ingest queue depth."""
    reading = await current_floor(runtime)
    CONTROLLERS_ONLINE.set(reading.controllers_online)
    INGEST_QUEUE_DEPTH.set(runtime.ingest.queue_depth)


@router.get("/metrics")
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Every metric of this process, in Prometheus' text format."""
    check_metrics_reader(request, runtime.settings)
    await refresh_gauges(runtime)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
