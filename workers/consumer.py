"""Feature consumer: apply deliveries in batches, exactly once in effect, ack after the commit.

Run with ``python -m workers.consumer``. One iteration takes up to ``consumer_batch_size``
deliveries, dead-letters poison ones at once (with the reason in a header), and hands the
rest to the applier thread: one transaction with the inbox dedupe rows and the feature
upserts. While that commits, the next batch is received; once it committed, the batch is
acked with one multiple ack. Nothing is acked before its commit.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time

import pika
import pika.exceptions
import psycopg2

from service import wallclock
from service.events import PoisonMessage
from service.settings import Settings
from workers import features
from workers.amqp import AmqpError, Link, wake
from workers.applier import Applier
from workers.confirms import ConfirmTracker
from workers.messages import Delivered, copy_properties, dead_letter_headers, read_delivery
from workers.metrics import ConsumerMetrics, error_kind
from workers.testhooks import pause_point
from workers.topology import FEATURE_CONSUMER, open_confirming, topology
from workers.unacked import UnackedTags

log = logging.getLogger("reco.consumer")

# Data errors of a message itself (SQLSTATE classes 22 and 23): only these make it poison.
# Any other database error (an outage, a deadlock, a read-only standby after a failover,
# a missing privilege or table) says nothing about the message: the batch is held unacked
# and consuming pauses until the database accepts the writes, so the DLQ stays clean.
POISON_DB_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


DEPTH_EVERY_S = 5.0


class PausedForDatabase(RuntimeError):
    """The database failed; consuming is paused and the batch is held, unacked."""


@dataclasses.dataclass(slots=True)
class Delivery:
    """One message as received, tagged with the link generation whose channel can ack it."""

    generation: int
    tag: int
    routing_key: str
    exchange: str
    properties: pika.BasicProperties
    body: bytes


@dataclasses.dataclass
class Pending:
    """A batch handed to the applier: acked once its commit succeeded."""

    valid: list[tuple[Delivery, Delivered]]
    future: concurrent.futures.Future
    last_tag: int
    started: float
    acked_early: bool = False  # negative control only


class Consumer:
    """Apply interaction events to the feature tables."""

    name = "consumer"

    def __init__(self, settings: Settings, metrics: ConsumerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics()
        self.topo = topology(settings)
        self.applier = Applier(settings, FEATURE_CONSUMER)
        self.link: Link | None = None
        self.generation = 0  # of the last link dropped: the next one counts on from it
        self.buffer: list[Delivery] = []
        self.held: list[Delivery] = []  # a batch that failed on the DB, retried before new ones
        self.pending: Pending | None = None
        self.consumer_tag: str | None = None
        self.paused = False
        self.stopping = False
        self.tracker = ConfirmTracker()  # confirms of dead-letter publishes
        self._dead_letter_tag = 0
        self._early_acked = (-1, 0)  # negative control only: (link generation, last tag acked)
        self._next_depths = 0.0
        self.unacked = UnackedTags()
        self.metrics.unacked.set_function(lambda: len(self.unacked))

    @property
    def live(self) -> Link:
        """The current link; run_once opens one before anything uses it."""
        if self.link is None:
            raise AmqpError("no AMQP link open")
        return self.link

    # -- the loop body --------------------------------------------------------------------
    def run_once(self) -> int:
        """Take a batch, settle the previous one, start applying this one; 0 when idle."""
        self._ensure_link()
        try:
            self._refresh_depths()
            if self.held:
                settled = self._finish_pending()
                batch, self.held = self.held, []
                self._submit(self._triage(batch))
                return settled + self._finish_pending()  # retried first, synchronously
            if self.paused and not self.stopping:
                self._resume()  # the database answers again: fetch new work
            batch = self._next_batch()
            valid = self._triage(batch)
            settled = self._finish_pending(then=[d for d, _ in valid])
            self._submit(valid)
            return settled + len(batch)
        except PausedForDatabase:
            raise
        except Exception:
            # Unknown state: taken deliveries might later be covered by a multiple ack.
            # Closing the channel makes the broker requeue every unacked one instead.
            self._abandon_link()
            raise

    def _next_batch(self) -> list[Delivery]:
        """Take up to a batch; while the previous one commits, let more arrive (group commit).

        With the database idle, whatever is buffered goes at once (low latency); under load
        the batch fills while the previous one is being applied (high throughput).
        """
        link = self.live
        link.step(0)
        size, pending = self.settings.consumer_batch_size, self.pending
        if pending is not None and len(self.buffer) < size and not self.stopping:
            link.wait_for(
                lambda: len(self.buffer) >= size or pending.future.done(),
                self.settings.consumer_batch_wait_ms / 1000,
            )
        batch, self.buffer = self.buffer[:size], self.buffer[size:]
        return batch

    def _triage(self, batch: list[Delivery]) -> list[tuple[Delivery, Delivered]]:
        """Drop deliveries of a dead channel, dead-letter poison, decode the rest."""
        generation = self.live.generation
        current = [d for d in batch if d.generation == generation]
        if len(current) < len(batch):
            # Their channel is gone: the broker already requeued them. Never ack old tags.
            log.info(
                "dropped deliveries of a closed channel", extra={"count": len(batch) - len(current)}
            )
        valid: list[tuple[Delivery, Delivered]] = []
        for delivery in current:
            try:
                valid.append((delivery, read_delivery(delivery.properties, delivery.body)))
            except PoisonMessage as exc:
                self._dead_letter(delivery, str(exc))
        return valid

    def _submit(self, valid: list[tuple[Delivery, Delivered]]) -> None:
        """Hand a batch to the applier (one transaction); it is acked in _finish_pending."""
        if not valid:
            return
        events, seen, skip_inbox = [], set(), self.settings.test_fault("consumer_skip_inbox")
        for _delivery, item in valid:
            # Twice in one batch: applied once, acked twice (unless the inbox is switched off).
            if item.event.event_id not in seen or skip_inbox:
                seen.add(item.event.event_id)
                events.append(_interaction(item))
        last_tag = max(d.tag for d, _ in valid)
        early = self.settings.test_fault("consumer_ack_before_commit")
        acked = (self.live.generation, last_tag)
        if early and acked > self._early_acked:
            # Negative control: ack on receipt, before the effect is durable, even while the
            # database is unreachable (a held batch is acked once, never twice).
            self._ack(last_tag)
            self._early_acked = acked
        try:
            self.applier.ensure()
        except psycopg2.Error as exc:  # no message is involved yet: never poison
            self._hold([d for d, _ in valid], exc)
            raise PausedForDatabase(f"database unreachable, consuming paused: {exc!r}") from exc
        future = self.applier.submit(events)
        future.add_done_callback(self._wake)
        self.pending = Pending(valid, future, last_tag, time.perf_counter(), early)

    def _wake(self, _future: concurrent.futures.Future) -> None:
        """Interrupt the I/O wait when a batch finished (runs on the applier thread)."""
        link = self.link
        wake(link.ioloop if link is not None else None)

    def _finish_pending(self, then: list[Delivery] | None = None) -> int:
        """Wait for the batch being applied; ack it after its commit; return its size.

        ``then`` are deliveries taken after it: held together with it if the DB failed.
        """
        pending, self.pending = self.pending, None
        if pending is None:
            return 0
        try:
            # Bounded by the connection's statement timeouts; heartbeats flow meanwhile.
            fresh = self.live.wait_result(pending.future)
        except POISON_DB_ERRORS as exc:
            # A row the database refuses: find it, dead-letter only it.
            log.warning("batch refused; applying one by one", extra={"error": repr(exc)[:300]})
            self._apply_each(pending.valid, then or [])
            return len(pending.valid)
        except psycopg2.Error as exc:
            self._hold([d for d, _ in pending.valid] + (then or []), exc)
            raise PausedForDatabase(f"database failed, consuming paused: {exc!r}") from exc
        pause_point(self.settings, "consumer_pause_after_commit", batch=len(pending.valid))
        if not pending.acked_early:
            self._ack(pending.last_tag)
        self._account(pending.valid, fresh, time.perf_counter() - pending.started)
        return len(pending.valid)

    def _apply_each(self, valid: list[tuple[Delivery, Delivered]], then: list[Delivery]) -> None:
        for index, (delivery, item) in enumerate(valid):
            started = time.perf_counter()
            try:
                fresh = self.applier.apply_now([_interaction(item)])
            except POISON_DB_ERRORS as exc:
                self._dead_letter(delivery, f"apply failed: {exc.pgcode} {exc}".strip())
                continue
            except psycopg2.Error as exc:
                self._hold([d for d, _ in valid[index:]] + then, exc)
                raise PausedForDatabase(f"database failed, consuming paused: {exc!r}") from exc
            self.live.require().basic_ack(delivery.tag)
            self.unacked.acked(delivery.generation, delivery.tag)
            self._account([(delivery, item)], fresh, time.perf_counter() - started)

    def _account(self, valid, fresh: set, seconds: float) -> None:
        now = wallclock.now()
        self.metrics.consumed.inc(len(valid))
        self.metrics.applied.inc(len(fresh))
        self.metrics.duplicates.inc(len(valid) - len(fresh))
        self.metrics.batch_size.observe(len(valid))
        self.metrics.apply_seconds.observe(seconds)
        debug = log.isEnabledFor(logging.DEBUG)
        for _delivery, item in valid:
            if item.created_at is not None and item.event.event_id in fresh:
                self.metrics.event_age.observe(max(0.0, now - item.created_at.timestamp()))
            if debug:
                outcome = "applied" if item.event.event_id in fresh else "duplicate"
                log.debug(outcome, extra=_ids(item))

    def _ack(self, last_tag: int) -> None:
        # multiple=True settles every unacked tag up to last_tag: all of them are in this batch
        # (earlier batches were acked, poison was acked singly, held batches come first).
        link = self.live
        link.require().basic_ack(last_tag, multiple=True)
        self.unacked.acked(link.generation, last_tag, multiple=True)
        link.step(0)

    def _hold(self, deliveries: list[Delivery], exc: BaseException) -> None:
        self.metrics.errors.labels("db").inc()
        self.held = deliveries
        self.applier.drop_connection()
        self._pause()
        log.warning(
            "database failed; consuming paused, batch held unacked",
            extra={"held": len(deliveries), "error": type(exc).__name__},
        )

    # -- poison ---------------------------------------------------------------------------
    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish a copy with the reason to the DLX under a confirm, then ack the original."""
        link = self.live
        channel = link.require()
        headers = dead_letter_headers(
            delivery.properties, reason, delivery.routing_key, delivery.exchange
        )
        props = copy_properties(delivery.properties, headers)
        channel.basic_publish(self.topo.dlx, delivery.routing_key, delivery.body, props, True)
        self.tracker.published(delivery.tag)
        self._dead_letter_tag = delivery.tag
        confirmed = link.wait_for(
            lambda: self.tracker.outstanding == 0, self.settings.relay_confirm_timeout_s
        )
        if not confirmed:
            self.tracker.fail_outstanding("confirm timeout")
        acked, failed = self.tracker.take()
        if delivery.tag not in acked:
            raise AmqpError(f"dead-letter publish not confirmed: {failed.get(delivery.tag)}")
        channel.basic_ack(delivery.tag)
        self.unacked.acked(delivery.generation, delivery.tag)
        self.metrics.dead_lettered.labels(_reason_label(reason)).inc()
        log.warning(
            "poison message dead-lettered",
            extra={
                "event_id": delivery.properties.message_id,
                "request_id": (delivery.properties.headers or {}).get("request_id"),
                "correlation_id": delivery.properties.correlation_id,
                "reason": reason,
            },
        )

    # -- broker ---------------------------------------------------------------------------
    def _ensure_link(self) -> None:
        """Open the link when there is none; fail the iteration when it died unnoticed.

        A link lost between iterations (a heartbeat timeout, the broker or a proxy closing it)
        is a failure like any other: reopening it at once, again and again on a flapping
        network, would hand every unacked delivery back each time and burn the queue's
        delivery limit in seconds. Raising lets the runner back off first.
        """
        link = self.link
        if link is not None and link.alive:
            return
        self._drop_link()
        self.applier.wait_idle()
        self.pending = None  # committed or not, its channel is gone: it will be redelivered
        self.buffer, self.held = [], []  # unacked deliveries died with their channel
        self.consumer_tag = None
        if link is not None:  # a failure that covered its loss would have dropped it (reset)
            raise AmqpError(f"broker link lost: {link.error!r}")
        self.tracker = ConfirmTracker()
        self.link = Link(self.settings, self.name)
        self.link.generation = self.generation
        try:
            self._set_up(self.link)
        except BaseException:
            # A step that timed out leaves the connection open but the channel half set up
            # (no qos, no consumer): kept, it would look alive and never deliver anything.
            self._drop_link()
            raise
        log.info("connected to broker", extra={"queue": self.topo.queue})

    def _set_up(self, link: Link) -> None:
        """Open the link, declare the topology, then confirms, prefetch and the consumer."""
        timeout = self.settings.amqp_socket_timeout_s
        channel = open_confirming(link, self.topo, timeout, self._on_confirm, self._on_return)
        link.call(
            lambda cb: channel.basic_qos(
                prefetch_count=self.settings.consumer_prefetch, callback=cb
            ),
            timeout,
        )
        self.paused = True
        self._resume()

    def _refresh_depths(self) -> None:
        """Export the ready depth of the feature queue and the DLQ, every few seconds."""
        now = time.monotonic()
        if now < self._next_depths:
            return
        self._next_depths = now + DEPTH_EVERY_S
        link, timeout = self.live, self.settings.amqp_socket_timeout_s
        for queue in (self.topo.queue, self.topo.dlq):
            self.metrics.queue_depth.labels(queue).set(link.ready_count(queue, timeout))

    def _drop_link(self) -> None:
        """Close and forget the link, keeping its generation for the next one."""
        if self.link is not None:
            self.generation = self.link.generation
            self.link.close()
            self.link = None

    def _abandon_link(self) -> None:
        self.applier.wait_idle()
        self.pending = None
        if self.link is not None:
            self.link.close()
        self.buffer, self.held = [], []

    def _on_message(self, _channel, method, properties, body: bytes) -> None:
        self.unacked.received(self.live.generation, method.delivery_tag)
        self.buffer.append(
            Delivery(
                self.live.generation,
                method.delivery_tag,
                method.routing_key,
                method.exchange,
                properties,
                body,
            )
        )

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        # The tracker may be replaced on reconnect: resolve it at call time.
        self.tracker.on_confirm(frame)

    def _on_return(self, _channel, method, _properties, _body) -> None:
        # Only one dead letter is ever in flight, so the return is about it.
        self.tracker.returned(self._dead_letter_tag, f"unroutable: {method.reply_text}")

    def _pause(self, reason: str = "database failure") -> None:
        """Stop deliveries (basic.cancel) so a DB outage does not burn the delivery limit."""
        if self.paused:
            return
        self.paused = True
        self.metrics.paused.set(1)
        level = logging.INFO if reason == "stopping" else logging.WARNING
        log.log(level, "consuming paused", extra={"reason": reason})
        link = self.link
        if link is not None and link.alive and self.consumer_tag:
            tag, self.consumer_tag = self.consumer_tag, None
            try:
                link.call(lambda cb: link.require().basic_cancel(tag, callback=cb), 2.0)
            except (AmqpError, pika.exceptions.AMQPError):
                pass  # the channel is going away anyway; its deliveries get requeued

    def _resume(self) -> None:
        if not self.paused or self.link is None:
            return
        channel = self.link.require()
        self.consumer_tag = channel.basic_consume(self.topo.queue, self._on_message, auto_ack=False)
        self.paused = False
        self.metrics.paused.set(0)
        log.info("consuming resumed", extra={"queue": self.topo.queue})

    # -- idle waiting and lifecycle -------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Wait for a delivery, ``timeout`` or stop, keeping heartbeats flowing."""
        link = self.link
        if link is not None and link.alive:
            # While paused, buffered deliveries must not cut the backoff short.
            link.wait_for(lambda: (bool(self.buffer) and not self.paused) or self.stopping, timeout)
        else:
            time.sleep(timeout)

    def reset(self, error: BaseException) -> None:
        """After a failure: drop what broke; a DB failure pauses consuming until it is back."""
        if not isinstance(error, PausedForDatabase):  # counted as "db" when it was held
            self.metrics.errors.labels(error_kind(error)).inc()
        if self.pending is not None:
            self.applier.wait_idle()
            self.held = [d for d, _ in self.pending.valid] + self.held
            self.pending = None
        if isinstance(error, psycopg2.Error):
            self.applier.drop_connection()
        if self.link is not None and not self.link.alive:
            self._drop_link()  # this failure covers the loss: the next open is no new one
        elif isinstance(error, psycopg2.Error):
            self._pause()  # stop fetching until the database answers again

    def request_stop(self) -> None:
        """Stop taking new batches; close() finishes what was delivered."""
        self.stopping = True

    def close(self) -> None:
        """Cancel consuming, finish and ack delivered work if the DB allows, then close."""
        try:
            if self.link is not None and self.link.alive:
                self._pause("stopping")
                self._finish_pending()
                waiting, self.held, self.buffer = self.held + self.buffer, [], []
                if waiting and self.applier.conn is not None and not self.applier.conn.closed:
                    self._submit(self._triage(waiting))
                    self._finish_pending()
        except Exception:  # noqa: BLE001 - unacked deliveries are requeued by the broker
            log.warning("could not finish in-flight deliveries; they will be redelivered")
        finally:
            self.applier.close()
            if self.link is not None:
                self.link.close()
                self.link = None


def _interaction(item: Delivered) -> features.Interaction:
    e = item.event
    return features.Interaction(
        e.event_id, item.created_at, e.user_id, e.item_id, e.kind, e.occurred_at
    )


def _reason_label(reason: str) -> str:
    for word in ("undecodable", "unknown", "unsupported", "invalid", "larger", "apply"):
        if word in reason:
            return word
    return "other"


def _ids(item: Delivered) -> dict[str, object]:
    return {
        "event_id": item.event.event_id,
        "request_id": item.request_id,
        "correlation_id": item.correlation_id,
    }


def main() -> int:
    """Entry point of ``python -m workers.consumer``."""
    from workers.main import main as run_worker

    return run_worker(
        "consumer",
        ConsumerMetrics,
        lambda settings, metrics: Consumer(settings, metrics),
        lambda settings: 1.0,
    )


if __name__ == "__main__":
    raise SystemExit(main())
