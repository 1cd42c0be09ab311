"""The monitoring page: the same figures as /metrics, for managers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from prometheus_client import CollectorRegistry

from server.adapters.metrics import REGISTRY
from server.api.deps import RuntimeDep
from server.api.routes.metrics import refresh_gauges
from server.web.i18n import N_
from server.web.session import ManagerUser
from server.web.templating import render

router = APIRouter(include_in_schema=False)

# The latency histograms shown, in order, with what each one times.
LATENCIES = (
    ("fablab_ingest_commit_seconds", N_("Apply and commit one ingest transaction")),
    ("fablab_ingest_ack_seconds", N_("Event received to its ack published")),
    ("fablab_auth_check_seconds", N_("Online badge check answered")),
    ("fablab_snapshot_publish_seconds", N_("Config and snapshot built, signed and published")),
)
OUTCOMES = {
    "committed": N_("committed"),
    "duplicate": N_("duplicate"),
    "rejected": N_("rejected"),
    "conflict": N_("conflict"),
}


@dataclass(frozen=True)
class Distribution:
    """A histogram since the server started: how many, mean, median and 99th percentile
    (estimated from the buckets as Prometheus' histogram_quantile does)."""

    count: int
    mean: float | None
    p50: float | None
    p99: float | None


@dataclass(frozen=True)
class Figures:
    """Every metric of the registry, by family name (without `_total`)."""

    counters: dict[str, dict[str, float]]
    gauges: dict[str, float]
    histograms: dict[str, Distribution]

    def counted(self, name: str) -> dict[str, float]:
        return self.counters.get(name, {})


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative (upper bound, count) buckets sorted by bound;
    linear within a bucket; the last finite bound if it falls in the +Inf bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _label(labels: dict[str, str]) -> str:
    return ",".join(labels[k] for k in sorted(labels)) or ""


def _distribution(samples: Iterable[Any]) -> Distribution:
    buckets, count, total = [], 0.0, 0.0
    for sample in samples:
        if sample.name.endswith("_bucket"):
            buckets.append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            total = sample.value
    buckets.sort()
    return Distribution(
        count=int(count),
        mean=total / count if count else None,
        p50=quantile(0.5, buckets),
        p99=quantile(0.99, buckets),
    )


def read_figures(registry: CollectorRegistry = REGISTRY) -> Figures:
    """The registry's current values (unlabelled histograms; counters by label)."""
    counters: dict[str, dict[str, float]] = {}
    gauges: dict[str, float] = {}
    histograms: dict[str, Distribution] = {}
    for family in registry.collect():
        if family.type == "counter":
            counters[family.name] = {
                _label(s.labels): s.value for s in family.samples if s.name.endswith("_total")
            }
        elif family.type == "gauge":
            gauges[family.name] = sum(s.value for s in family.samples)
        elif family.type == "histogram":
            histograms[family.name] = _distribution(family.samples)
    return Figures(counters, gauges, histograms)


@router.get("/monitoring", response_class=HTMLResponse)
async def monitoring(request: Request, runtime: RuntimeDep, user: ManagerUser) -> HTMLResponse:
    """Ingest, online checks, acks, snapshots and controllers, since the server started."""
    await refresh_gauges(runtime)
    context = {"figures": read_figures(), "latencies": LATENCIES, "outcomes": OUTCOMES}
    return render(request, "monitoring.html", context)
