"""Prometheus metrics: /metrics from prometheus-flask-exporter, the request series and our own.

The exporter serves /metrics (aggregating gunicorn's workers in multiprocess mode) and the
info metric. Its default per-request hooks are off: they cost about 40 µs a request, mostly
in werkzeug's context-local lookups, so the same series (names and labels; our buckets) are
recorded where the request ends anyway, in the WSGI wrapper, through cached label children.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

# A bound at every server-side guardrail threshold (guardrails.toml: 50, 200, 300, 400, 600 ms):
# a quantile interpolated within a bucket then falls above a threshold exactly when the true
# one does. 14 bounds: every one is a series per endpoint and status (and per worker file).
HISTOGRAM_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
UNMATCHED = "<unmatched>"  # the path label of a request that matched no route
# Label values come from the request: an unknown method must not create a series per spelling.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNTRACKED_PATHS = frozenset({"/metrics"})  # scraping is not traffic


def multiprocess_mode() -> bool:
    """Gunicorn's workers share metrics through files in PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_pid = {"value": os.getpid()}


def _refresh_pid() -> None:
    _pid["value"] = os.getpid()


def cache_process_id() -> None:
    """Let multiprocess metrics read a cached pid, refreshed in every forked child.

    prometheus_client calls os.getpid() (a system call) on each metric update to notice a
    fork; a request makes about ten updates. The pid only changes at fork, so track it there.
    """
    if getattr(values.ValueClass, "_pid_cached", False):
        return
    os.register_at_fork(after_in_child=_refresh_pid)
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid["value"])
    values.ValueClass._pid_cached = True  # type: ignore[attr-defined]


class ServiceMetrics:
    """The request series and the service's own, registered once per app."""

    def __init__(self, registry: CollectorRegistry):
        kw: dict[str, Any] = {"registry": registry}
        # prometheus-flask-exporter's default series: same names and labels, our buckets.
        self.request_duration = Histogram(
            "flask_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ["method", "path", "status"],
            buckets=HISTOGRAM_BUCKETS,
            **kw,
        )
        self.request_total = Counter(
            "flask_http_request_total", "Total number of HTTP requests", ["method", "status"], **kw
        )
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.inflight = Gauge(
            "reco_http_inflight_requests", "Requests in flight", multiprocess_mode="livesum", **kw
        )
        self.shed = Counter(
            "reco_http_shed_total", "Requests shed before any work", ["reason"], **kw
        )
        self.pool_wait = Histogram(
            "reco_db_pool_wait_seconds",
            "Time waiting for a free pooled connection (connecting not included)",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5),
            **kw,
        )
        self.db_connect = Histogram(
            "reco_db_connect_seconds",
            "Time to open a new database connection for the pool",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            **kw,
        )
        self.db_errors = Counter(
            "reco_db_errors_total", "Database failures by kind", ["kind"], **kw
        )
        self.idempotency = Counter(
            "reco_idempotency_total", "Idempotency outcomes", ["outcome"], **kw
        )
        self.outbox_rows = Counter("reco_outbox_rows_written_total", "Outbox rows committed", **kw)
        self.events = Counter("reco_events_total", "Events received by result", ["result"], **kw)
        self.breaker_open = Gauge(
            "reco_db_circuit_open",
            "1 while the database breaker is open (0 again once it lets a trial through)",
            multiprocess_mode="max",
            **kw,
        )

    def observe_request(self, method: str, path: str, status: str, seconds: float) -> None:
        """Count one answered request and its duration (``path`` is the route template)."""
        if path in UNTRACKED_PATHS:
            return
        key = (method if method in METHODS else "other", path, status)
        children = self._request_children.get(key)
        if children is None:  # bounded: methods x routes x statuses
            children = (
                self.request_duration.labels(*key),
                self.request_total.labels(key[0], status),
            )
            self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()


def path(request) -> str:
    """Label requests by route template so user ids never become label values."""
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED


def install(app: Flask) -> ServiceMetrics:
    """Attach HTTP metrics and /metrics (aggregating all gunicorn workers when multiprocess)."""
    common = {"export_defaults": False}  # the request series: ServiceMetrics.observe_request
    if multiprocess_mode():
        cache_process_id()
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        exporter = GunicornInternalPrometheusMetrics(app, **common)
        registry = CollectorRegistry()  # values go to the shared files; exposition aggregates
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        registry = CollectorRegistry()
        exporter = PrometheusMetrics(app, registry=registry, **common)
    exporter.info("reco_service_info", "Service version", version=_version())
    return ServiceMetrics(registry)


def _version() -> str:
    from service.openapi import version

    return version()
