"""Sample the pipeline once a second: outbox backlog and age, queue depths, apply latency.

Writes `pipeline.jsonl` in a run directory, one object per second:
{"t", "outbox_backlog", "oldest_unpublished_s", "queue_ready", "dlq_ready",
 "applied", "apply_p50_ms", "apply_p99_ms"} — apply latency is commit of the event's outbox row
to its inbox row (the consumer's commit), over the events applied in that second. Given
``processes`` (component name -> a callable giving its root pid), each line also carries the
memory and descriptors of those process trees (``harness.resources``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg2

from harness import resources

BACKLOG = """
SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))
FROM outbox WHERE published_at IS NULL
"""
# Sessions per role of ours (application_name reco-<role>) and the outbox's dead tuples and
# size: a soak must show them flat (autovacuum keeping up, no connection leak).
HOUSEKEEPING = """
SELECT count(*) FILTER (WHERE application_name = 'reco-api'),
       count(*) FILTER (WHERE application_name = 'reco-relay'),
       count(*) FILTER (WHERE application_name = 'reco-consumer'),
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass),
       pg_total_relation_size('outbox'::regclass)
FROM pg_stat_activity
"""
APPLIED = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY applied_at - event_created),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY applied_at - event_created)
FROM inbox WHERE applied_at > %(since)s AND applied_at <= %(until)s
"""


class PipelineSampler:
    """A background thread appending one sample per interval until stopped."""

    def __init__(
        self,
        database_url: str,
        amqp_url: str | None,
        namespace: str,
        out: Path,
        interval_s: float = 1.0,
        processes: Mapping[str, Callable[[], int | None]] | None = None,
    ):
        self.database_url = database_url
        self.processes = dict(processes or {})
        self.amqp_url = amqp_url
        self.namespace = namespace
        self.out = Path(out)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-sampler", daemon=True)
        self._conn: Any = None  # a psycopg2 connection
        self._channel: Any = None  # a pika BlockingChannel
        self._amqp: Any = None  # its pika BlockingConnection

    def start(self) -> PipelineSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        with contextlib.suppress(Exception):
            if self._amqp is not None:
                self._amqp.close()

    def _loop(self) -> None:
        last = time.time()
        with open(self.out, "a", encoding="utf-8") as sink:
            while not self._stop.wait(self.interval_s):
                now = time.time()
                sample = {"t": round(now, 3), **self._database(last, now), **self._broker()}
                if self.processes:
                    sample.update(resources.sample(self.processes))
                last = now
                sink.write(json.dumps(sample) + "\n")
                sink.flush()

    def _database(self, since: float, until: float) -> dict[str, Any]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(
                    self.database_url,
                    connect_timeout=2,
                    application_name="reco-sampler",
                    options="-c statement_timeout=2000",  # a sample never waits long
                )
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute(BACKLOG)
                backlog, oldest = cur.fetchone()
                cur.execute(APPLIED, {"since": utc(since), "until": utc(until)})
                applied, p50, p99 = cur.fetchone()
                cur.execute(HOUSEKEEPING)
                api, relay, consumer, dead, size = cur.fetchone()
        except psycopg2.Error:
            self._conn = None
            return {"outbox_backlog": None}
        return {
            "outbox_backlog": int(backlog),
            "oldest_unpublished_s": round(float(oldest), 3) if oldest is not None else 0.0,
            "applied": int(applied),
            "apply_p50_ms": interval_ms(p50),
            "apply_p99_ms": interval_ms(p99),
            "pg_conns_api": api,
            "pg_conns_relay": relay,
            "pg_conns_consumer": consumer,
            "outbox_dead_tuples": dead,
            "outbox_mb": round(size / 2**20, 2),
        }

    def _broker(self) -> dict[str, Any]:
        if not self.amqp_url:
            return {}
        import pika

        try:
            if self._channel is None or self._channel.is_closed:
                params = pika.URLParameters(self.amqp_url)
                params.socket_timeout = 2
                params.blocked_connection_timeout = 2
                params.connection_attempts = 1
                self._amqp = pika.BlockingConnection(params)
                self._channel = self._amqp.channel()
            ready = self._channel.queue_declare(f"{self.namespace}.features", passive=True)
            dlq = self._channel.queue_declare(f"{self.namespace}.features.dlq", passive=True)
            return {
                "queue_ready": ready.method.message_count,
                "dlq_ready": dlq.method.message_count,
            }
        except Exception:  # noqa: BLE001 - a broker fault must not stop sampling
            self._channel = None
            with contextlib.suppress(Exception):
                if self._amqp is not None:
                    self._amqp.close()
            return {"queue_ready": None, "dlq_ready": None}


def utc(unix: float) -> dt.datetime:
    """Unix seconds as an aware UTC datetime (what timestamptz parameters want)."""
    return dt.datetime.fromtimestamp(unix, dt.UTC)


def interval_ms(interval: dt.timedelta | None) -> float | None:
    """A PostgreSQL interval in milliseconds, rounded; None stays None."""
    return round(interval.total_seconds() * 1000, 2) if interval is not None else None
