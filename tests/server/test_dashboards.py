"""The Grafana dashboard shipped in dashboards/grafana/ queries what the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server.adapters.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "fablab.json"
_SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def _exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES)
    return names


def test_dashboard_queries_only_metrics_the_server_exports() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"\bfablab_[a-z_]+", target["expr"])
    }
    assert queried and queried <= _exported()


def test_dashboard_shows_every_metric_of_the_server() -> None:
    text = DASHBOARD.read_text()
    assert [f.name for f in REGISTRY.collect() if f.name not in text] == []
