"""Prometheus metrics of the server process (served at ``/metrics``).

One module holds every metric object so that ingest, the online check, the config
publisher and the API instrument the same registry. Names follow Prometheus
conventions (``_total`` counters, ``_seconds`` histograms). Each process has its own
registry: with several server processes, Prometheus scrapes each one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 0.5 ms to 10 s: online checks and acks live in the low ms.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

INGEST_EVENTS = Counter(
    "fablab_ingest_events_total",
    "Controller events taken by ingest, by outcome (accepted, duplicate, rejected, "
    "conflict, unreadable, unknown_controller, bad_topic).",
    ["outcome"],
    registry=REGISTRY,
)
INGEST_REJECTED = Counter(
    "fablab_ingest_rejected_total",
    "Controller events stored as rejected, by reason (invalid, refused, could_not_apply, "
    "unreadable, unknown_controller, bad_topic).",
    ["reason"],
    registry=REGISTRY,
)
INGEST_BATCH_SIZE = Histogram(
    "fablab_ingest_batch_size",
    "Events applied in one ingest transaction.",
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
INGEST_COMMIT_SECONDS = Histogram(
    "fablab_ingest_commit_seconds",
    "Time to apply and durably commit one ingest batch, then send its acks (and the "
    "configs it changed).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INGEST_ACK_SECONDS = Histogram(
    "fablab_ingest_ack_seconds",
    "Time from an event's arrival at the server to its ack being published.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INGEST_QUEUE_DEPTH = Gauge(
    "fablab_ingest_queue_depth",
    "Messages received from the broker and waiting for ingest (read at scrape time).",
    registry=REGISTRY,
)
AUTH_CHECK_SECONDS = Histogram(
    "fablab_auth_check_seconds",
    "Time to answer one online badge check (auth/request to auth/response published).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CONTROLLERS_ONLINE = Gauge(
    "fablab_controllers_online",
    "Controllers online: their last status message said online and they were heard "
    "from within the missed-heartbeat window (read at scrape time).",
    registry=REGISTRY,
)
SNAPSHOT_PUBLISH_SECONDS = Histogram(
    "fablab_snapshot_publish_seconds",
    "Time to build, sign and publish one machine's config and permission snapshot.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
