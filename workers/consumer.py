"""Feature consumer: apply deliveries in batches, exactly once in effect, ack after the commit.

Run with ``python -m workers.consumer``. One iteration takes up to ``consumer_batch_size``
deliveries, dead-letters poison ones at once (with the reason in a header), applies the rest
in one transaction with the inbox dedupe row, commits, and acks them with one multiple ack.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pika
import pika.exceptions
import psycopg2
import psycopg2.errors

from service.db.connect import connect
from service.events import PoisonMessage
from service.settings import Settings
from workers import features
from workers.amqp import AmqpError, Link
from workers.confirms import ConfirmTracker
from workers.messages import Delivered, dead_letter_headers, read_delivery
from workers.metrics import ConsumerMetrics
from workers.testhooks import pause_point
from workers.topology import FEATURE_CONSUMER, declare, topology

log = logging.getLogger("reco.consumer")

TRANSIENT_DB_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.LockNotAvailable,
    psycopg2.errors.QueryCanceled,
)


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


class Consumer:
    """Apply interaction events to the feature tables."""

    name = "consumer"

    def __init__(self, settings: Settings, metrics: ConsumerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics()
        self.topo = topology(settings)
        self.consumer_name = FEATURE_CONSUMER
        self.db = None
        self.link: Link | None = None
        self.buffer: list[Delivery] = []
        self.held: list[Delivery] = []  # a batch that failed on the DB, retried before new ones
        self.consumer_tag: str | None = None
        self.paused = False
        self.stopping = False
        self.tracker = ConfirmTracker()  # confirms of dead-letter publishes
        self._dead_letter_tag = 0

    # -- the loop body --------------------------------------------------------------------
    def run_once(self) -> int:
        """Process one batch; return the number of deliveries settled (0 when idle)."""
        self._ensure_link()
        self._ensure_db()
        try:
            settled = self._process_held()
            if self.paused and not self.stopping:
                self._resume()  # the database answers again: fetch new work
            if settled:
                return settled
            batch = self._next_batch()
            return self.process(batch) if batch else 0
        except PausedForDatabase:
            raise
        except Exception:
            # Unknown state: taken deliveries might later be covered by a multiple ack.
            # Closing the channel makes the broker requeue every unacked one instead.
            self._abandon_link()
            raise

    def _process_held(self) -> int:
        if not self.held:
            return 0
        batch, self.held = self.held, []
        return self.process(batch)

    def _next_batch(self) -> list[Delivery]:
        self.link.step(0)
        if not self.buffer:
            return []
        size = self.settings.consumer_batch_size
        if len(self.buffer) < size and not self.stopping:
            self.link.wait_for(
                lambda: len(self.buffer) >= size, self.settings.consumer_batch_wait_ms / 1000
            )
        batch, self.buffer = self.buffer[:size], self.buffer[size:]
        return batch

    def process(self, batch: list[Delivery]) -> int:
        """Dead-letter poison, apply the rest in one transaction, commit, then ack."""
        current = [d for d in batch if d.generation == self.link.generation]
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
        if valid:
            self._apply(valid)
        return len(current)

    def _apply(self, valid: list[tuple[Delivery, Delivered]]) -> None:
        started = time.perf_counter()
        events, seen, skip_inbox = [], set(), self._skip_inbox
        for _delivery, item in valid:
            # Twice in one batch: applied once, acked twice (unless the inbox is switched off).
            if item.event.event_id not in seen or skip_inbox:
                seen.add(item.event.event_id)
                events.append(_interaction(item))
        last_tag = max(d.tag for d, _ in valid)
        early_ack = self.settings.test_fault("consumer_ack_before_commit")
        try:
            if early_ack:
                self._ack(last_tag)  # negative control: ack before the effect is durable
            with self.db.cursor() as cur:
                fresh = features.apply_batch(cur, self.consumer_name, events, self._skip_inbox)
            pause_point(self.settings, "consumer_pause_before_commit", batch=len(valid))
            self.db.commit()
        except TRANSIENT_DB_ERRORS as exc:
            self._hold([d for d, _ in valid], exc)
            raise PausedForDatabase(f"database failed, consuming paused: {exc!r}") from exc
        except psycopg2.Error as exc:
            # A row the database refuses (not an outage): find it, dead-letter only it.
            self.db.rollback()
            log.warning("batch refused; applying one by one", extra={"error": repr(exc)[:300]})
            self._apply_each(valid)
            return
        pause_point(self.settings, "consumer_pause_after_commit", batch=len(valid))
        if not early_ack:
            self._ack(last_tag)
        self._account(valid, fresh, time.perf_counter() - started)

    def _apply_each(self, valid: list[tuple[Delivery, Delivered]]) -> None:
        for index, (delivery, item) in enumerate(valid):
            started = time.perf_counter()
            try:
                with self.db.cursor() as cur:
                    fresh = features.apply_batch(
                        cur, self.consumer_name, [_interaction(item)], self._skip_inbox
                    )
                self.db.commit()
            except TRANSIENT_DB_ERRORS as exc:
                self._hold([d for d, _ in valid[index:]], exc)
                raise PausedForDatabase(f"database failed, consuming paused: {exc!r}") from exc
            except psycopg2.Error as exc:
                self.db.rollback()
                self._dead_letter(delivery, f"apply failed: {exc.pgcode} {exc}".strip())
                continue
            self.link.require().basic_ack(delivery.tag)
            self._account([(delivery, item)], fresh, time.perf_counter() - started)

    @property
    def _skip_inbox(self) -> bool:
        return self.settings.test_fault("consumer_skip_inbox")

    def _account(self, valid, fresh: set, seconds: float) -> None:
        now = time.time()
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
        self.link.require().basic_ack(last_tag, multiple=True)
        self.link.step(0)

    def _hold(self, deliveries: list[Delivery], exc: BaseException) -> None:
        self.metrics.errors.labels("database").inc()
        self.held = deliveries
        if self.db is not None:
            _close_quietly(self.db)
            self.db = None
        self._pause()
        log.warning(
            "database failed; consuming paused, batch held unacked",
            extra={"held": len(deliveries), "error": type(exc).__name__},
        )

    # -- poison ---------------------------------------------------------------------------
    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish a copy with the reason to the DLX under a confirm, then ack the original."""
        channel = self.link.require()
        headers = dead_letter_headers(
            delivery.properties, reason, delivery.routing_key, delivery.exchange
        )
        props = _copy_properties(delivery.properties, headers)
        channel.basic_publish(self.topo.dlx, delivery.routing_key, delivery.body, props, True)
        self.tracker.published(delivery.tag)
        self._dead_letter_tag = delivery.tag
        confirmed = self.link.wait_for(
            lambda: self.tracker.outstanding == 0, self.settings.relay_confirm_timeout_s
        )
        if not confirmed:
            self.tracker.fail_outstanding("confirm timeout")
        acked, failed = self.tracker.take()
        if delivery.tag not in acked:
            raise AmqpError(f"dead-letter publish not confirmed: {failed.get(delivery.tag)}")
        channel.basic_ack(delivery.tag)
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
        if self.link is not None and self.link.alive:
            return
        generation = self.link.generation if self.link is not None else 0
        if self.link is not None:
            self.link.close()
        self.buffer, self.held = [], []  # unacked deliveries died with their channel
        self.consumer_tag = None
        self.tracker = ConfirmTracker()
        self.link = Link(self.settings, self.name)
        self.link.generation = generation
        self.link.open()
        timeout = self.settings.amqp_socket_timeout_s
        declare(self.link, self.topo, timeout)
        channel = self.link.require()
        channel.add_on_return_callback(self._on_return)
        self.link.call(lambda cb: channel.confirm_delivery(self._on_confirm, callback=cb), timeout)
        self.link.call(
            lambda cb: channel.basic_qos(
                prefetch_count=self.settings.consumer_prefetch, callback=cb
            ),
            timeout,
        )
        self.paused = True
        self._resume()
        log.info("connected to broker", extra={"queue": self.topo.queue})

    def _abandon_link(self) -> None:
        if self.link is not None:
            self.link.close()
        self.buffer, self.held = [], []

    def _on_message(self, _channel, method, properties, body: bytes) -> None:
        self.buffer.append(
            Delivery(
                self.link.generation,
                method.delivery_tag,
                method.routing_key,
                method.exchange,
                properties,
                body,
            )
        )

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Ack):
            self.tracker.ack(method.delivery_tag, method.multiple)
        else:
            self.tracker.nack(method.delivery_tag, method.multiple)

    def _on_return(self, _channel, method, _properties, _body) -> None:
        # Only one dead letter is ever in flight, so the return is about it.
        self.tracker.returned(self._dead_letter_tag, f"unroutable: {method.reply_text}")

    def _pause(self, reason: str = "database failure") -> None:
        """Stop deliveries (basic.cancel) so a DB outage does not burn the delivery limit."""
        if self.paused:
            return
        self.paused = True
        self.metrics.paused.set(1)
        log.warning("consuming paused", extra={"reason": reason})
        if self.link is not None and self.link.alive and self.consumer_tag:
            tag, self.consumer_tag = self.consumer_tag, None
            try:
                self.link.call(lambda cb: self.link.require().basic_cancel(tag, callback=cb), 2.0)
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

    # -- database -------------------------------------------------------------------------
    def _ensure_db(self) -> None:
        if self.db is None or self.db.closed:
            self.db = connect(self.settings, "consumer")

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
        """After a failure: roll back; drop the link if it broke (held batches die with it)."""
        if self.db is not None:
            try:
                self.db.rollback()
            except psycopg2.Error:
                _close_quietly(self.db)
                self.db = None
        if isinstance(error, psycopg2.Error) and self.db is not None:
            _close_quietly(self.db)
            self.db = None
        if self.link is not None and not self.link.alive:
            self.link.close()
        elif isinstance(error, psycopg2.Error) and not self.held:
            self._pause()  # DB down before a batch was taken: stop fetching until it is back

    def request_stop(self) -> None:
        """Stop taking new batches; close() finishes what was delivered."""
        self.stopping = True

    def close(self) -> None:
        """Cancel consuming, finish and ack delivered work if the DB allows, then close."""
        try:
            if self.link is not None and self.link.alive:
                self._pause("stopping")
                pending, self.held, self.buffer = self.held + self.buffer, [], []
                if pending and self.db is not None and not self.db.closed:
                    self.process(pending)
        except Exception:  # noqa: BLE001 - unacked deliveries are requeued by the broker
            log.warning("could not finish in-flight deliveries; they will be redelivered")
        finally:
            if self.link is not None:
                self.link.close()
                self.link = None
            if self.db is not None:
                _close_quietly(self.db)
                self.db = None


def _copy_properties(props: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=props.content_type,
        delivery_mode=2,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        type=props.type,
        timestamp=props.timestamp,
        headers=headers,
    )


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


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection must not raise
        pass


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
