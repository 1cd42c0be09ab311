"""The monitoring page's reading of the metrics registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.web.monitoring import quantile, read_figures


def test_monitoring_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(0.01, 50.0), (0.02, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.75, buckets) == pytest.approx(0.015)


def test_monitoring_quantile_in_the_infinite_bucket_is_the_last_bound() -> None:
    assert quantile(0.99, [(0.01, 1.0), (float("inf"), 10.0)]) == 0.01


def test_monitoring_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, [(0.01, 0.0), (float("inf"), 0.0)]) is None


def test_monitoring_read_figures_gives_counters_gauges_and_histograms() -> None:
    registry = CollectorRegistry()
    events = Counter("x_events_total", "e", ["outcome"], registry=registry)
    events.labels("committed").inc(3)
    Gauge("x_depth", "d", registry=registry).set(4)
    latency = Histogram("x_seconds", "l", buckets=(0.001, 0.01), registry=registry)
    for value in (0.0005, 0.005):
        latency.observe(value)
    figures = read_figures(registry)
    assert figures.counted("x_events") == {"committed": 3.0}
    assert figures.gauges["x_depth"] == 4.0
    assert figures.histograms["x_seconds"].count == 2
    assert figures.histograms["x_seconds"].mean == pytest.approx(0.00275)
