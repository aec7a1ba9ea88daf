"""Outbox relay: claim unpublished rows, publish them under confirms, mark them after the ack.

Run with ``python -m workers.relay``. One iteration (``run_once``) is one transaction:
claim up to ``relay_batch_size`` rows ``FOR UPDATE SKIP LOCKED``, publish each as a
persistent, mandatory message with many publishes in flight, wait for the confirms, then mark
acked rows published and record an attempt and the error on the others, and commit.
"""

from __future__ import annotations

import logging
import select
import time

import pika
import pika.exceptions
import psycopg2
from pika.adapters.select_connection import IOLoop

from service.db.connect import connect
from service.settings import Settings
from workers import outbox
from workers.amqp import AmqpError, Link
from workers.confirms import ConfirmTracker
from workers.messages import OUTBOX_ID, properties_for
from workers.metrics import RelayMetrics
from workers.testhooks import pause_point
from workers.topology import declare, topology

log = logging.getLogger("reco.relay")

FLUSH_EVERY = 32  # publishes between non-blocking I/O steps: confirms start flowing early
BACKLOG_EVERY_S = 5.0
PURGE_BATCH = 5_000
PURGE_MAX_ROUNDS = 20  # at most 100k rows per purge run, so a purge never starves publishing
MAX_LOGGED_FAILURES = 20


def failure_kind(reason: str) -> str:
    """Classify a pending-row reason for the failure metric."""
    for prefix, kind in (
        ("unroutable", "unroutable"),
        ("nacked", "nacked"),
        ("confirm", "timeout"),
    ):
        if reason.startswith(prefix):
            return kind
    return "closed"


class Relay:
    """Publish committed outbox rows to the events exchange, at least once."""

    name = "relay"

    def __init__(
        self,
        settings: Settings,
        metrics: RelayMetrics | None = None,
        clock=time.monotonic,
    ):
        self.settings = settings
        self.metrics = metrics or RelayMetrics()
        self.clock = clock
        self.topo = topology(settings)
        self.db = None
        self.listener = None
        self.link: Link | None = None
        self.tracker = ConfirmTracker()
        self.stopping = False
        self._woken = False
        self._watched: tuple[int, int] | None = None  # (id(ioloop), fd) of the LISTEN socket
        self._next_backlog = 0.0
        self._next_purge = clock() + min(5.0, settings.relay_retention_interval_s)

    # -- the loop body --------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim, publish, confirm and mark one batch; return the number of rows claimed."""
        self._ensure_connections()
        self._housekeeping()
        started = time.perf_counter()
        unsafe = self.settings.test_fault("relay_mark_before_confirm")
        with self.db.cursor() as cur:
            rows = outbox.claim(cur, self.settings.relay_batch_size)
            if not rows:
                self.db.commit()
                return 0
            acked, failed, link_error = self._publish(rows, cur if unsafe else None)
            pause_point(
                self.settings, "relay_pause_before_commit", rows=len(rows), acked=len(acked)
            )
            if not unsafe:
                outbox.mark_published(cur, acked)
                outbox.record_failures(cur, failed)
        self.db.commit()
        self._account(rows, acked, failed, time.perf_counter() - started)
        if link_error:
            raise AmqpError(link_error)
        return len(rows)

    def _publish(self, rows: list[outbox.OutboxRow], unsafe_cur=None):
        """Publish ``rows`` with confirms in flight; return (acked ids, failures, link error)."""
        link = self.link
        assert link is not None
        error = None
        try:
            channel = link.require()
            exchange = self.topo.exchange
            for index, row in enumerate(rows):
                props = properties_for(
                    row.id, row.event_id, row.event_type, row.headers, row.created_at
                )
                channel.basic_publish(exchange, row.routing_key, row.payload, props, True)
                self.tracker.published(row.id)
                if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                    link.step(0)
            link.step(0)  # flush what is buffered before (possibly) pausing
            pause_point(self.settings, "relay_pause_before_confirm", rows=len(rows))
            if unsafe_cur is not None:
                # Negative control: claim success before the broker took responsibility.
                outbox.mark_published(unsafe_cur, [r.id for r in rows])
                self.db.commit()
            link.wait_for(
                lambda: self.tracker.outstanding == 0 or not link.alive,
                self.settings.relay_confirm_timeout_s,
            )
        except (pika.exceptions.AMQPError, AmqpError) as exc:
            error = f"publish failed: {exc!r}"
        if self.tracker.outstanding:
            reason = error or ("confirm timeout" if link.alive else f"link closed: {link.error!r}")
            self.tracker.fail_outstanding(reason)
            error = error or reason
        acked, failed = self.tracker.take()
        return acked, failed, error

    def _account(self, rows, acked, failed, seconds: float) -> None:
        self.metrics.batch_size.observe(len(rows))
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.published.inc(len(acked))
        if not failed:
            if log.isEnabledFor(logging.DEBUG):
                for row in rows:
                    log.debug("published", extra=_ids(row))
            return
        by_id = {row.id: row for row in rows}
        for logged, (row_id, reason) in enumerate(failed.items()):
            self.metrics.failed.labels(failure_kind(reason)).inc()
            if logged < MAX_LOGGED_FAILURES:
                log.warning(
                    "publish not confirmed; row stays pending",
                    extra={**_ids(by_id[row_id]), "reason": reason},
                )
        log.warning(
            "batch partly unpublished",
            extra={"claimed": len(rows), "acked": len(acked), "pending": len(failed)},
        )

    # -- housekeeping ---------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = self.clock()
        if now >= self._next_backlog:
            self._next_backlog = now + BACKLOG_EVERY_S
            with self.db.cursor() as cur:
                count, age = outbox.backlog(cur)
            self.db.commit()
            self.metrics.backlog.set(count)
            self.metrics.oldest_age.set(age)
        if now >= self._next_purge:
            self._next_purge = now + self.settings.relay_retention_interval_s
            self.purge()

    def purge(self) -> int:
        """Delete published rows older than the retention, in bounded batches; return count."""
        total = 0
        age_s = self.settings.relay_retention_hours * 3600
        for _ in range(PURGE_MAX_ROUNDS):
            with self.db.cursor() as cur:
                deleted = outbox.purge_published(cur, age_s, PURGE_BATCH)
            self.db.commit()
            total += deleted
            if deleted < PURGE_BATCH:
                break
        if total:
            self.metrics.purged.inc(total)
            log.info("purged published outbox rows", extra={"rows": total})
        return total

    # -- connections ----------------------------------------------------------------------
    def _ensure_connections(self) -> None:
        if self.db is None or self.db.closed:
            self.db = connect(self.settings, "relay")
        if self.listener is None or self.listener.closed:
            self.listener = connect(self.settings, "relay")
            self.listener.autocommit = True
            with self.listener.cursor() as cur:
                cur.execute("LISTEN outbox")
            self._watched = None
        if self.link is None or not self.link.alive:
            self._open_link()

    def _open_link(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link = Link(self.settings, self.name)
        self.tracker = ConfirmTracker()  # delivery tags restart at 1 on a new channel
        self._watched = None
        self.link.open()
        timeout = self.settings.amqp_socket_timeout_s
        declare(self.link, self.topo, timeout)
        channel = self.link.require()
        channel.add_on_return_callback(self._on_return)
        self.link.call(lambda cb: channel.confirm_delivery(self._on_confirm, callback=cb), timeout)
        log.info("connected to broker", extra={"exchange": self.topo.exchange})

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Ack):
            self.tracker.ack(method.delivery_tag, method.multiple)
        else:
            self.tracker.nack(method.delivery_tag, method.multiple)

    def _on_return(self, _channel, method, properties, _body) -> None:
        key = (properties.headers or {}).get(OUTBOX_ID)
        self.tracker.returned(key, f"unroutable: {method.reply_code} {method.reply_text}")

    # -- idle waiting ---------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Sleep until NOTIFY outbox, ``timeout`` or stop, keeping AMQP heartbeats flowing."""
        if self._woken or self.stopping:
            self._woken = False
            return
        link, listener = self.link, self.listener
        if link is not None and link.alive and link.ioloop is not None:
            self._watch(link.ioloop)
            link.wait_for(lambda: self._woken or self.stopping, timeout)
        elif listener is not None and not listener.closed:
            select.select([listener], [], [], timeout)
            self._drain_notifies()
        else:
            time.sleep(timeout)
        self._woken = False

    def _watch(self, ioloop: IOLoop) -> None:
        if self.listener is None or self.listener.closed:
            return
        key = (id(ioloop), self.listener.fileno())
        if self._watched != key:
            ioloop.add_handler(key[1], lambda _fd, _events: self._drain_notifies(), IOLoop.READ)
            self._watched = key

    def _drain_notifies(self) -> None:
        self._woken = True
        listener = self.listener
        if listener is None:
            return
        try:
            listener.poll()
            listener.notifies.clear()
        except psycopg2.Error:
            self._drop_listener()

    def _drop_listener(self) -> None:
        listener, self.listener = self.listener, None
        self._drop_listener_watch()
        if listener is not None:
            _close_quietly(listener)

    # -- lifecycle ------------------------------------------------------------------------
    def reset(self, error: BaseException) -> None:
        """Roll back and drop whatever ``error`` may have broken; run_once reconnects."""
        if self.db is not None:
            try:
                self.db.rollback()
            except psycopg2.Error:
                pass
            if isinstance(error, psycopg2.Error) or self.db.closed:
                _close_quietly(self.db)
                self.db = None
                self._drop_listener()
        if self.link is not None and (isinstance(error, AmqpError) or not self.link.alive):
            self._drop_listener_watch()
            self.link.close()
            self.link = None

    def _drop_listener_watch(self) -> None:
        if self._watched is not None and self.link is not None and self.link.ioloop is not None:
            try:
                self.link.ioloop.remove_handler(self._watched[1])
            except Exception:  # noqa: BLE001, S110 - the fd may already be gone
                pass
        self._watched = None

    def request_stop(self) -> None:
        """Stop claiming after the current batch (its confirms and commit still complete)."""
        self.stopping = True

    def close(self) -> None:
        """Close the broker link and database connections (no batch is in flight here)."""
        self._drop_listener()
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.db is not None:
            _close_quietly(self.db)
            self.db = None


def _ids(row: outbox.OutboxRow) -> dict[str, object]:
    return {
        "event_id": row.event_id,
        "outbox_id": row.id,
        "request_id": row.headers.get("request_id"),
        "correlation_id": row.headers.get("correlation_id"),
    }


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection must not raise
        pass


def main() -> int:
    """Entry point of ``python -m workers.relay``."""
    from workers.main import main as run_worker

    return run_worker(
        "relay",
        RelayMetrics,
        lambda settings, metrics: Relay(settings, metrics),
        lambda settings: settings.relay_poll_interval_ms / 1000,
    )


if __name__ == "__main__":
    raise SystemExit(main())
