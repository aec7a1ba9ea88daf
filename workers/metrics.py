"""Prometheus metrics of the relay and consumer, served with /healthz on one small HTTP server."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable

import orjson
import pika.exceptions
import psycopg2
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from workers.amqp import AmqpError, PublishRefused

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


def error_kind(error: BaseException) -> str:
    """Classify a loop failure for the ``errors`` counters: db, amqp or other."""
    if isinstance(error, psycopg2.Error):
        return "db"
    if isinstance(error, AmqpError | PublishRefused | pika.exceptions.AMQPError):
        return "amqp"
    return "other"


class RelayMetrics:
    """Counters, gauges and histograms of one relay process."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "reco_relay_published",
            "Outbox rows confirmed, marked published and committed",
            registry=r,
        )
        self.failed = Counter(
            "reco_relay_publish_failed",
            "Publishes left pending, by reason (unroutable, nacked, timeout, closed)",
            ["reason"],
            registry=r,
        )
        self.errors = Counter("reco_relay_errors", "Loop failures, by kind", ["kind"], registry=r)
        self.batch_size = Histogram(
            "reco_relay_batch_size", "Rows claimed per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "reco_relay_batch_seconds",
            "Claim, publish, confirm and commit time of one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.purged = Counter("reco_relay_purged", "Published rows purged", registry=r)
        self.keys_purged = Counter(
            "reco_relay_idempotency_keys_purged", "Expired idempotency records purged", registry=r
        )
        self.backlog = Gauge("reco_outbox_backlog", "Unpublished outbox rows", registry=r)
        self.oldest_age = Gauge(
            "reco_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row",
            registry=r,
        )


class ConsumerMetrics:
    """Counters, gauges and histograms of one consumer process."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("reco_consumer_consumed", "Deliveries received", registry=r)
        self.applied = Counter("reco_consumer_applied", "Events applied to features", registry=r)
        self.duplicates = Counter(
            "reco_consumer_duplicates", "Deliveries of already applied events", registry=r
        )
        self.dead_lettered = Counter(
            "reco_consumer_dead_lettered",
            "Messages sent to the DLQ, by reason",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "reco_consumer_errors", "Loop failures, by kind", ["kind"], registry=r
        )
        self.batch_size = Histogram(
            "reco_consumer_batch_size",
            "Deliveries per transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.apply_seconds = Histogram(
            "reco_consumer_apply_seconds",
            "Apply and commit time of one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_age = Histogram(
            "reco_consumer_event_age_seconds",
            "Outbox created_at to applied, per event",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.paused = Gauge(
            "reco_consumer_paused", "1 while consuming is paused for a DB failure", registry=r
        )
        self.unacked = Gauge(
            "reco_consumer_unacked_deliveries",
            "Deliveries received and not acked yet (buffered, being applied or held)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "reco_queue_depth",
            "Ready messages in a queue (passive declare)",
            ["queue"],
            registry=r,
        )


class Health:
    """Liveness of a worker loop: the runner beats; /healthz fails if beats stop."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic):
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.last_beat = clock()
        self.details: dict[str, object] = {}

    def beat(self, **details: object) -> None:
        self.last_beat = self.clock()
        self.details.update(details)

    def status(self) -> tuple[int, dict[str, object]]:
        age = self.clock() - self.last_beat
        ok = age <= self.stall_after_s
        body = {"status": "ok" if ok else "stalled", "loop_age_s": round(age, 3), **self.details}
        return (200 if ok else 503), body


def serve(
    port: int, registry: CollectorRegistry, health: Health, host: str = "127.0.0.1"
) -> http.server.HTTPServer:
    """Serve /metrics and /healthz on ``host``:``port`` from a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5  # seconds per client socket, so a stuck scraper cannot hold a thread

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                status, body = health.status()
                self._send(status, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"status":"not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return None  # scrapes are not worth a log line

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server
