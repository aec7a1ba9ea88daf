"""Outbox relay: claim unpublished rows, publish them under confirms, mark them after the ack.

Run with ``python -m workers.relay``. Each batch is one transaction: claim up to
``relay_batch_size`` rows ``FOR UPDATE SKIP LOCKED``, publish each as a persistent, mandatory
message with the whole batch in flight, and once every confirm is in, mark acked rows
published and record an attempt and the error on the others, then commit. Two such
transactions alternate (claim and publish the next batch while the previous one's confirms
arrive), so the broker and the database are busy at the same time.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import time
from typing import Any

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
from workers.metrics import RelayMetrics, error_kind
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


@dataclasses.dataclass
class Batch:
    """Rows claimed in one open transaction, published, waiting for their confirms."""

    conn: Any
    rows: list[outbox.OutboxRow]
    last_tag: int
    started: float
    premarked: bool = False  # negative control only: marked before its confirms


class Relay:
    """Publish committed outbox rows to the events exchange, at least once.

    Two transactions alternate so the broker and the database work at the same time: while
    one batch waits for its confirms, the next one is claimed and published. A batch is
    marked and committed only after every one of its confirms arrived.
    """

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
        self.conns: list = [None, None]  # two transactions alternate; see the class docstring
        self.listener = None
        self.link: Link | None = None
        self.tracker = ConfirmTracker()
        self.inflight: Batch | None = None
        self._claimed: dict[int, list[outbox.OutboxRow]] = {}  # id(conn) -> rows, tx open
        self.stopping = False
        self._woken = False
        self._watched: tuple[int, int] | None = None  # (id(ioloop), fd) of the LISTEN socket
        self._next_backlog = 0.0
        self._next_purge = clock() + min(5.0, settings.relay_retention_interval_s)

    # -- the loop body --------------------------------------------------------------------
    def run_once(self) -> int:
        """Publish the next batch, then settle the previous one; return rows handled."""
        self._ensure_connections()
        conn = self._free_conn()
        rows = self._claimed.pop(id(conn), None)  # claimed while settling, tx still open
        if rows is None and not self.stopping:
            self._housekeeping(conn)
            with conn.cursor() as cur:
                rows = outbox.claim(cur, self.settings.relay_batch_size)
        batch = None
        if rows and not self.stopping:
            batch = self._publish(conn, rows)
        elif rows is not None:
            with conn.cursor() as cur:
                outbox.finish(cur, commit=not rows)  # rows claimed before a stop go back
        rows = rows if batch is not None else []
        previous, self.inflight = self.inflight, batch
        settled = self._settle(previous, claim_next=True) if previous is not None else 0
        return len(rows) or settled

    def prepare(self) -> None:
        """Connect and run due housekeeping now (benchmarks keep it out of the timed part)."""
        self._ensure_connections()
        self._housekeeping(self._free_conn())

    def flush(self) -> int:
        """Settle the batch in flight, if any: wait for its confirms, mark, commit."""
        previous, self.inflight = self.inflight, None
        return self._settle(previous, claim_next=False) if previous is not None else 0

    def _free_conn(self):
        busy = self.inflight.conn if self.inflight is not None else None
        return self.conns[1] if self.conns[0] is busy else self.conns[0]

    def _publish(self, conn, rows: list[outbox.OutboxRow]) -> Batch:
        """Publish ``rows`` without waiting for confirms; the batch settles later."""
        link = self.link
        assert link is not None
        channel = link.require()
        exchange = self.topo.exchange
        for index, row in enumerate(rows):
            props = properties_for(
                row.id, row.event_id, row.event_type, row.headers, row.created_at
            )
            channel.basic_publish(exchange, row.routing_key, row.payload, props, True)
            self.tracker.published(row.id)
            if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                link.step(0)  # let frames out and confirms in while publishing
        link.step(0)
        batch = Batch(conn, rows, self.tracker.next_tag - 1, time.perf_counter())
        pause_point(self.settings, "relay_pause_before_confirm", rows=len(rows))
        if self.settings.test_fault("relay_mark_before_confirm"):
            # Negative control: claim success before the broker took responsibility.
            with conn.cursor() as cur:
                outbox.mark_published(cur, [r.id for r in rows])
                outbox.finish(cur)
            batch.premarked = True
        return batch

    def _settle(self, batch: Batch, claim_next: bool) -> int:
        """Wait for the batch's confirms; mark, record failures, commit (and claim again)."""
        link = self.link
        assert link is not None
        link.wait_for(
            lambda: self.tracker.settled_through(batch.last_tag) or not link.alive,
            self.settings.relay_confirm_timeout_s,
        )
        error = None
        if not self.tracker.settled_through(batch.last_tag):
            error = "confirm timeout" if link.alive else f"link closed: {link.error!r}"
            self.tracker.fail_outstanding(error)  # a later batch fails too: its tx rolls back
        acked, failed = self.tracker.take([row.id for row in batch.rows])
        pause_point(
            self.settings, "relay_pause_before_commit", rows=len(batch.rows), acked=len(acked)
        )
        # Claim the next batch in the same round trip, unless stopping, failing or due for
        # housekeeping (which runs before a fresh claim).
        limit = self.settings.relay_batch_size
        if not claim_next or self.stopping or error or self._housekeeping_due():
            limit = 0
        with batch.conn.cursor() as cur:
            claimed = outbox.settle(cur, acked, failed, limit, commit=not batch.premarked)
        if limit:
            self._claimed[id(batch.conn)] = claimed
        self._account(batch.rows, acked, failed, time.perf_counter() - batch.started)
        if error:
            raise AmqpError(error)
        return len(batch.rows)

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
    def _housekeeping_due(self) -> bool:
        now = self.clock()
        return now >= self._next_backlog or now >= self._next_purge

    def _housekeeping(self, conn) -> None:
        """Refresh the backlog gauges and purge old rows when due (autocommit statements)."""
        now = self.clock()
        if now >= self._next_backlog:
            self._next_backlog = now + BACKLOG_EVERY_S
            with conn.cursor() as cur:
                count, age = outbox.backlog(cur)
            self.metrics.backlog.set(count)
            self.metrics.oldest_age.set(age)
        if now >= self._next_purge:
            self._next_purge = now + self.settings.relay_retention_interval_s
            self.purge(conn)

    def purge(self, conn=None) -> int:
        """Delete published rows older than the retention, in bounded batches; return count."""
        if conn is None:
            self._ensure_connections()
            conn = self._free_conn()
            if self._claimed.pop(id(conn), None) is not None:
                _rollback_quietly(conn)  # give claimed rows back: purge runs in autocommit
        total = 0
        age_s = self.settings.relay_retention_hours * 3600
        for _ in range(PURGE_MAX_ROUNDS):
            with conn.cursor() as cur:
                deleted = outbox.purge_published(cur, age_s, PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH:
                break
        if total:
            self.metrics.purged.inc(total)
            log.info("purged published outbox rows", extra={"rows": total})
        return total

    # -- connections ----------------------------------------------------------------------
    def _ensure_connections(self) -> None:
        for index, conn in enumerate(self.conns):
            if conn is None or conn.closed:
                conn = connect(self.settings, "relay")
                conn.autocommit = True  # transactions are spelled out; see workers/outbox.py
                self.conns[index] = conn
        if self.listener is None or self.listener.closed:
            self.listener = connect(self.settings, "relay")
            self.listener.autocommit = True
            with self.listener.cursor() as cur:
                cur.execute("LISTEN outbox")
            self._watched = None
        if self.link is None or not self.link.alive:
            self._open_link()

    def _open_link(self) -> None:
        if self.inflight is not None:
            # Its confirms died with the old channel: roll back, the rows stay pending.
            _rollback_quietly(self.inflight.conn)
            self.inflight = None
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
        """Roll back both transactions (their rows stay pending) and drop what broke."""
        self.metrics.errors.labels(error_kind(error)).inc()
        self.inflight = None
        self._claimed.clear()
        self.tracker.forget()  # confirms of rolled-back batches no longer matter
        for index, conn in enumerate(self.conns):
            if conn is None:
                continue
            if not _rollback_quietly(conn) or isinstance(error, psycopg2.Error):
                _close_quietly(conn)
                self.conns[index] = None
        if isinstance(error, psycopg2.Error):
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
        """Settle the batch in flight (confirms, mark, commit), then close everything."""
        try:
            if self.inflight is not None and self.link is not None:
                self.flush()
        except Exception:  # noqa: BLE001 - unsettled rows stay pending and are republished
            log.warning("could not settle the batch in flight; its rows stay pending")
        finally:
            self._drop_listener()
            if self.link is not None:
                self.link.close()
                self.link = None
            self._claimed.clear()
            for index, conn in enumerate(self.conns):
                if conn is not None:
                    _close_quietly(conn)  # closing ends any open transaction: rolled back
                    self.conns[index] = None


def _ids(row: outbox.OutboxRow) -> dict[str, object]:
    return {
        "event_id": row.event_id,
        "outbox_id": row.id,
        "request_id": row.headers.get("request_id"),
        "correlation_id": row.headers.get("correlation_id"),
    }


def _rollback_quietly(conn) -> bool:
    """ROLLBACK whatever is open (a warning if nothing is); False if the connection broke."""
    try:
        with conn.cursor() as cur:
            outbox.finish(cur, commit=False)
    except psycopg2.Error:
        return False
    return True


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
