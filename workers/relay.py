"""Outbox relay: claim unpublished rows, publish them under confirms, mark them after the ack.

Run with ``python -m workers.relay``. Each batch is one transaction: claim up to
``relay_batch_size`` rows ``FOR UPDATE SKIP LOCKED``, publish each as a persistent, mandatory
message with the whole batch in flight, and once every confirm is in, mark acked rows
published, record an attempt and the error on the others, and commit.

Batches form a pipeline over three connections so neither the broker nor this process waits
for the other: batch *n* is published while batch *n-1*'s confirms arrive, and once they are
in, a helper thread marks and commits *n-1* and claims a later batch in the same round trip,
while the main thread already publishes *n+1* (claimed earlier). psycopg2 releases the GIL
while PostgreSQL works, and the main thread keeps stepping the AMQP link while it waits.

A batch whose every row came back returned (unroutable) or nacked fails its iteration once
committed, so the runner's capped, jittered backoff spaces the retries instead of a tight
republish loop. A batch with some rows accepted keeps the pipeline going. Every refused row
also waits for its own ``retry_at`` before it is claimed again, so rows that cannot be routed
never hold back the rows behind them, however many of them sit at the head of the outbox.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import time
from typing import Any, NoReturn

import pika
import psycopg2

from service.db.connect import connect
from service.db.deadline import DeadlineExceeded
from service.settings import Settings
from workers import outbox
from workers.amqp import AmqpError, Link, PublishRefused
from workers.confirms import ConfirmTracker
from workers.messages import OUTBOX_ID, properties
from workers.metrics import RelayMetrics, error_kind
from workers.notify import OutboxListener
from workers.testhooks import pause_point
from workers.topology import open_confirming, topology

log = logging.getLogger("reco.relay")

FLUSH_EVERY = 32  # publishes between non-blocking I/O steps: confirms start flowing early
BACKLOG_EVERY_S = 5.0
PURGE_BATCH = 5_000
PURGE_MAX_ROUNDS = 20  # at most 100k rows per purge run, so a purge never starves publishing
MAX_LOGGED_FAILURES = 20
HINTED_CLAIMS = 7  # claims in a row that start above the last full claim; then one from the start
FAILURE_KINDS = (("unroutable", "unroutable"), ("nacked", "nacked"), ("confirm", "timeout"))


def failure_kind(reason: str) -> str:
    """Classify a pending-row reason for the failure metric."""
    for prefix, kind in FAILURE_KINDS:
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
    refused: bool = False  # once settled: the broker returned or nacked every row


class Relay:
    """Publish committed outbox rows to the events exchange, at least once."""

    name = "relay"
    CONNECTIONS = 3  # one batch in flight, two claimed ahead (see the module docstring)

    def __init__(self, settings: Settings, metrics: RelayMetrics | None = None, clock=None):
        self.settings = settings
        self.metrics = metrics or RelayMetrics()
        self.clock = clock or time.monotonic
        self.topo = topology(settings)
        self.conns: list = [None] * self.CONNECTIONS
        self.listener = OutboxListener(settings)
        self.link: Link | None = None
        self.tracker = ConfirmTracker()
        self.inflight: Batch | None = None
        # Claims in order, each (connection, future of its rows); a non-empty result holds
        # an open transaction on that connection, an empty one was already committed.
        self.ready: collections.deque[tuple[Any, concurrent.futures.Future]] = collections.deque()
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="relay-db")
        self._db_silent = False  # a job's wait ran out: the jobs queued behind it fail at once
        self.stopping = False
        self.probing = False  # after a refused batch: each batch settles before more are claimed
        self.resting = False  # between a reset and the next run_once: the runner's backoff
        # Claim pacing: a claim that came back short took every visible row, so claiming
        # again while its batch is in flight finds nothing unless new rows committed
        # (NOTIFY) or claimed rows were given back. Without this, each small batch cost five
        # or six claims, each walking the index; an iteration with nothing in flight always
        # claims (after idling, a reset, or at launch).
        self.short = False  # the last claim from the start returned fewer rows than asked
        self.fresh = True  # rows may have appeared since that claim
        # Where the next claim may start (DB thread): every row below the last full claim's
        # highest id was locked when it ran, by this relay or another (see _claim_from).
        self.claim_after = 0
        self.hinted = 0
        self.retry = outbox.RetryDelay(settings.relay_retry_base_s, settings.relay_retry_max_s)
        self._next_backlog = 0.0
        self._next_purge = self.clock() + min(5.0, settings.relay_retention_interval_s)

    # -- the loop body --------------------------------------------------------------------
    def run_once(self) -> int:
        """Publish the next claimed batch, then settle the previous one; return rows handled."""
        self.resting = False
        self._ensure_connections()
        if not self.ready:
            if self.inflight is None:
                self.fresh = True  # nothing in flight: after idling, a reset or at launch
            self._claim_ahead()
        batch = None
        while self.ready:  # empty claims were committed already: skip them
            conn, future = self.ready.popleft()
            rows = self._wait(future)  # normally done: claimed while the last batch was published
            if rows and not self.stopping:
                batch = self._publish(conn, rows)
                break
            if rows:
                _rollback_quietly(conn)  # stopping: give the claimed rows back
        previous, self.inflight = self.inflight, batch
        busy = batch is not None  # keep claiming ahead only while there is work
        settled = self._settle(previous, claim_next=busy) if previous is not None else 0
        if previous is not None and previous.refused:
            self._back_off(previous)
        if batch is not None and self.probing:
            return self._probe(batch)
        if busy:
            self._claim_ahead()
        return len(batch.rows) if batch is not None else settled

    def _back_off(self, refused: Batch) -> NoReturn:
        """Settle what is in flight, then fail the iteration so the runner backs off.

        Refused rows stay pending until their ``retry_at``; the next claim takes the rows
        behind them, and claiming again at once would publish into a broken route or a full
        queue in a tight loop. The batch published meanwhile is settled, not rolled back
        after the broker took it.
        """
        self.flush()
        self.probing = True
        raise PublishRefused(f"all {len(refused.rows)} rows returned or nacked; backing off")

    def _probe(self, batch: Batch) -> int:
        """After a refusal, settle ``batch`` at once; fail again if it is refused too.

        Left in flight, it would settle in the next iteration while this one succeeded: every
        other iteration a success, and the runner would log a recovery each time, though the
        route never came back.
        """
        self.flush()
        if batch.refused:
            self._back_off(batch)
        self.probing = False  # accepted again: back to the pipeline
        return len(batch.rows)

    def prepare(self) -> None:
        """Connect and run due housekeeping now (benchmarks keep it out of the timed part)."""
        self._ensure_connections()
        self._submit(self._housekeeping, self.conns[0]).result()

    def flush(self) -> int:
        """Settle the batch in flight and give unpublished claims back; return rows settled."""
        self._quiesce()
        previous, self.inflight = self.inflight, None
        settled = self._settle(previous, claim_next=False) if previous is not None else 0
        self._quiesce()
        return settled

    def _quiesce(self) -> None:
        """Wait for every database job; roll back claims not yet published."""
        gave_back = bool(self.ready)  # rows given back, or a claim that may have failed
        while self.ready:
            conn, future = self.ready.popleft()
            try:
                if self._wait(future):
                    _rollback_quietly(conn)
            except DeadlineExceeded:
                _close_quietly(conn)  # a silent server: a rollback would wait out the deadline
            except Exception:  # noqa: BLE001 - a failed claim holds nothing
                _rollback_quietly(conn)
        if gave_back:
            self._gave_back()

    def _gave_back(self) -> None:
        """Claimed rows went back to pending: look again, from the start (below the hint)."""
        self.fresh = True
        self.claim_after = 0

    def _claim_ahead(self) -> None:
        """Keep claims queued so the next batch is ready before it is needed.

        Two while batches come back full (a backlog: the broker never waits for a claim),
        one after a short claim once new rows may have appeared, none until then.
        """
        if self.stopping or not self._may_claim():
            return
        busy = {id(conn) for conn, _ in self.ready}
        if self.inflight is not None:
            busy.add(id(self.inflight.conn))
        wanted = 1 if self.probing or self.short else 2  # a probe publishes one batch
        for conn in self.conns:
            if len(self.ready) >= wanted:
                return
            if id(conn) not in busy:
                future = self._submit(self._claim_rows, conn, self._housekeeping_due())
                self.ready.append((conn, future))
                busy.add(id(conn))
                self.fresh = False

    def _may_claim(self) -> bool:
        """True unless the last claim came back short and no row can have appeared since.

        A NOTIFY that arrived while busy is taken here: it counts as rows committed since.
        """
        if self.listener.woken:  # a NOTIFY arrived while busy: rows committed since
            self.listener.woken = False
            self.fresh = True
        return self.fresh or not self.short

    def _claim_from(self) -> int:
        """On the DB thread: the id the next claim starts above (0: from the start).

        SKIP LOCKED still visits every locked row it passes: 7.5 µs each, so a 200-row claim
        behind eleven locked batches took 20 ms instead of 3 (four relays, each with a batch
        in flight and two claimed ahead). Every unpublished row below a full claim's last id
        was locked when it ran, so while claims come back full the next one starts above it.
        Rows below that can still turn claimable (given back by a crash or a refusal, or
        committed late with a lower id), so every eighth claim, and any after a short one or
        a reset, walks from the start: such a row waits at most seven claims longer.
        """
        if self.claim_after and self.hinted < HINTED_CLAIMS:
            self.hinted += 1
            return self.claim_after
        self.hinted = 0
        return 0

    def _claimed(self, rows: list[outbox.OutboxRow], limit: int, after: int) -> None:
        """On the DB thread: record what a claim says about the rows below the next one."""
        full = len(rows) == limit
        self.claim_after = rows[-1].id if full else 0  # claimed in id order: the last is highest
        # A short claim from the start took every visible row; one that started above an id
        # says nothing about the rows below it, and the next claim starts from the start.
        self.short = not full and not after

    def _claim_rows(self, conn, housekeeping: bool) -> list[outbox.OutboxRow]:
        """On the DB thread: housekeeping if due, then claim (an empty claim is committed)."""
        if housekeeping:
            self._housekeeping(conn)
        after, limit = self._claim_from(), self.settings.relay_batch_size
        with conn.cursor() as cur:
            rows = outbox.claim(cur, limit, after)
            if not rows:
                outbox.finish(cur)
        self._claimed(rows, limit, after)
        return rows

    def _publish(self, conn, rows: list[outbox.OutboxRow]) -> Batch:
        """Publish ``rows`` without waiting for confirms; the batch settles later."""
        link = self.link
        assert link is not None
        channel = link.require()
        exchange = self.topo.exchange
        for index, row in enumerate(rows):
            props = properties(row.event_id, row.event_type, row.headers, row.timestamp)
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
        """Wait for the batch's confirms, then mark and commit it on the DB thread."""
        link = self.link
        assert link is not None
        link.wait_for(
            lambda: self.tracker.settled_through(batch.last_tag) or not link.alive,
            self.settings.relay_confirm_timeout_s,
        )
        error = None
        if not self.tracker.settled_through(batch.last_tag):
            error = "confirm timeout" if link.alive else f"link closed: {link.error!r}"
            self.tracker.fail_outstanding(error)
        acked, failed = self.tracker.take([row.id for row in batch.rows])
        pause_point(
            self.settings, "relay_pause_before_commit", rows=len(batch.rows), acked=len(acked)
        )
        # The same round trip claims again unless stopping, failing, backing off after a refused
        # batch or due for housekeeping (a fresh claim runs that first).
        batch.refused = bool(failed) and not acked and not error
        limit = self.settings.relay_batch_size
        if not claim_next or self.stopping or error or batch.refused or self._housekeeping_due():
            limit = 0
        elif not self._may_claim():
            limit = 0  # the last claim took every visible row: wait for NOTIFY or the poll
        else:
            self.fresh = False
        future = self._submit(
            self._settle_rows, batch.conn, acked, failed, limit, not batch.premarked
        )
        if limit:
            self.ready.append((batch.conn, future))
        else:
            self._wait(future)  # nothing to claim: the connection is free once this commits
        self._account(batch.rows, acked, failed, batch.started)
        if error:
            raise AmqpError(error)
        return len(batch.rows)

    def _submit(self, job, *args) -> concurrent.futures.Future:
        """Queue a job for the DB thread (one at a time, in order)."""
        return self._db.submit(self._guarded, job, *args)

    def _guarded(self, job, *args) -> Any:
        """On the DB thread: run ``job``, unless an earlier one found the server silent.

        Each wait for the server is bounded, but jobs queue behind each other: without this,
        a black hole cost a full bound per queued job before the iteration failed.
        """
        if self._db_silent:
            raise DeadlineExceeded("an earlier database job found the server silent")
        try:
            return job(*args)
        except DeadlineExceeded:
            self._db_silent = True
            raise

    def _wait(self, future: concurrent.futures.Future) -> Any:
        """A database job's result, with the AMQP link serviced meanwhile (heartbeats, confirms).

        Callbacks run during the wait only record: confirms and returns land in the tracker,
        NOTIFY sets ``listener.woken``; batches are settled by this thread afterwards.
        """
        link = self.link
        return link.wait_result(future) if link is not None else future.result()

    def _settle_rows(self, conn, acked, failed, limit: int, commit: bool) -> list[outbox.OutboxRow]:
        """On the DB thread: mark, record failures, commit; then claim (empty: committed)."""
        after = self._claim_from() if limit else 0
        with conn.cursor() as cur:
            rows = outbox.settle(
                cur, acked, failed, limit, commit=commit, retry=self.retry, claim_after=after
            )
            # Counted once committed (a failed commit leaves them to be published again), and
            # before the job's result is set, so whoever waits for it sees the count.
            self.metrics.published.inc(len(acked))
            if limit and not rows:
                outbox.finish(cur)
        if limit:
            self._claimed(rows, limit, after)
        return rows

    def _account(self, rows, acked, failed, started: float) -> None:
        self.metrics.batch_size.observe(len(rows))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
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
        if conn is None:  # called from outside the loop: settle nothing, give claims back
            self._ensure_connections()
            self._quiesce()
            conn = next(
                c for c in self.conns if self.inflight is None or c is not self.inflight.conn
            )
        age_s = self.settings.relay_retention_hours * 3600
        total = _purge_in_rounds(conn, lambda cur: outbox.purge_published(cur, age_s, PURGE_BATCH))
        if total:
            self.metrics.purged.inc(total)
            log.info("purged published outbox rows", extra={"rows": total})
        keys = _purge_in_rounds(conn, lambda cur: outbox.purge_expired_keys(cur, PURGE_BATCH))
        if keys:
            self.metrics.keys_purged.inc(keys)
            log.info("purged expired idempotency keys", extra={"rows": keys})
        return total

    # -- connections ----------------------------------------------------------------------
    def _ensure_connections(self) -> None:
        if self._db_silent or self.listener.silent:
            # A wait for the server ran out outside an iteration (the listener's, while idle)
            # or in a job nobody waited for yet: fail now, not after reconnecting into the
            # same silence and waiting out another bound.
            raise DeadlineExceeded("the database stopped answering")
        for index, conn in enumerate(self.conns):
            if conn is None or conn.closed:
                conn = connect(self.settings, "relay")
                conn.autocommit = True  # transactions are spelled out; see workers/outbox.py
                self.conns[index] = conn
        self.listener.ensure()
        if self.link is not None and not self.link.alive:
            # Lost between iterations (a heartbeat timeout, a proxy or the broker closing it):
            # a failure like any other, so the runner backs off before the next reopen instead
            # of reconnecting at once, again and again, on a flapping network. A failure
            # already raised for it closed it (reset), and then the link is None.
            raise AmqpError(f"broker link lost: {self.link.error!r}")
        if self.link is None:
            self._open_link()

    def _open_link(self) -> None:
        if self.inflight is not None:
            # Its confirms died with the old channel: roll back, the rows stay pending.
            _rollback_quietly(self.inflight.conn)
            self.inflight = None
            self._gave_back()
        self._close_link()
        self.link = Link(self.settings, self.name)
        self.tracker = ConfirmTracker()  # delivery tags restart at 1 on a new channel
        try:
            open_confirming(
                self.link,
                self.topo,
                self.settings.amqp_socket_timeout_s,
                self._on_confirm,
                self._on_return,
            )
        except BaseException:
            # Whatever failed, a half-set-up channel (not in confirm mode) must not be kept.
            self._close_link()
            raise
        log.info("connected to broker", extra={"exchange": self.topo.exchange})

    def _close_link(self) -> None:
        self.listener.unwatch()
        if self.link is not None:
            self.link.close()
            self.link = None

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        # The tracker may be replaced on reconnect: resolve it at call time.
        self.tracker.on_confirm(frame)

    def _on_return(self, _channel, method, props, _body) -> None:
        key = (props.headers or {}).get(OUTBOX_ID)
        self.tracker.returned(key, f"unroutable: {method.reply_code} {method.reply_text}")

    # -- idle waiting and lifecycle -------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Sleep until NOTIFY outbox, ``timeout`` or stop, keeping AMQP heartbeats flowing.

        Writers notify only while the relay sleeps here (armed); a row committed while it
        armed is found by the arming's own check, and then it does not sleep at all. After a
        reset it only rests: the runner is backing off, and a wake-up must not cut that short.
        """
        if self.resting:
            self._rest(timeout)
            return
        listener = self.listener
        if not listener.woken and not self.fresh and not self.stopping:
            if listener.arm():
                link = self.link
                if link is not None and link.alive and link.ioloop is not None:
                    listener.watch(link.ioloop)
                    link.wait_for(lambda: listener.woken or self.stopping, timeout)
                else:
                    listener.sleep(timeout)
            listener.disarm()
        listener.woken = False
        self.fresh = True  # woken by NOTIFY, or the poll: look again

    def _rest(self, timeout: float) -> None:
        """Sit out a backoff: no claims and no wake-ups, but heartbeats on a link still open.

        Without one it returns at once; the runner sleeps out the rest of its pause.
        """
        link = self.link
        if link is not None and link.alive:
            link.wait_for(lambda: self.stopping, timeout)

    def reset(self, error: BaseException) -> None:
        """Roll back every open transaction (their rows stay pending) and drop what broke."""
        self.metrics.errors.labels(error_kind(error)).inc()
        self.resting = True  # the runner backs off next: wait() sits it out
        self._gave_back()  # whatever was claimed is rolled back below
        self.inflight = None
        self._quiesce()
        self.tracker.forget()  # confirms of rolled-back batches no longer matter
        for index, conn in enumerate(self.conns):
            if conn is None:
                continue
            # After a database error, close without a rollback: on a silent server each
            # rollback would wait out the deadline, and closing ends the transaction anyway.
            if isinstance(error, psycopg2.Error) or not _rollback_quietly(conn):
                _close_quietly(conn)
                self.conns[index] = None
        if isinstance(error, psycopg2.Error):
            self.listener.close()
        self._db_silent = self.listener.silent = False  # jobs ended (quiesced); reconnect next
        if self.link is not None and (isinstance(error, AmqpError) or not self.link.alive):
            self._close_link()

    def request_stop(self) -> None:
        """Stop claiming after the current batch (its confirms and commit still complete)."""
        self.stopping = True

    def close(self) -> None:
        """Settle the batch in flight (confirms, mark, commit), then close everything."""
        try:
            if self.link is not None:
                self.flush()
        except Exception:  # noqa: BLE001 - unsettled rows stay pending and are republished
            log.warning("could not settle the batch in flight; its rows stay pending")
        finally:
            try:
                self._quiesce()
            except Exception:  # noqa: BLE001, S110 - closing the connections ends it anyway
                pass
            self._db.shutdown(wait=True)
            self.listener.close()
            self._close_link()
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


def _purge_in_rounds(conn, purge_batch) -> int:
    """Repeat a bounded delete until a round deletes less than a batch; return the total."""
    total = 0
    for _ in range(PURGE_MAX_ROUNDS):
        with conn.cursor() as cur:
            deleted = purge_batch(cur)
        total += deleted
        if deleted < PURGE_BATCH:
            break
    return total


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
