"""Exchanges, queues and bindings of the reco event flow, declared idempotently by every worker.

What each queue argument guarantees (see docs/events.md):

* ``x-queue-type=quorum`` — Raft-replicated, durable; a confirmed message survives a broker
  restart (on one node: durability, no replication).
* ``x-delivery-limit`` — a message redelivered more often is dead-lettered instead of looping
  forever; set explicitly because the default changed between versions (none → 20).
* ``x-dead-letter-exchange`` — where those messages go (original routing key kept).
* ``x-dead-letter-strategy=at-least-once`` — the broker re-publishes dead letters with
  confirms and keeps them until the DLQ took them (the default is at-most-once).
* ``x-overflow=reject-publish`` — required by at-least-once dead-lettering; at
  ``x-max-length`` the broker nacks new publishes (the relay keeps the rows pending) instead
  of silently dropping the oldest messages.

The DLQ is a quorum queue too, with ``x-delivery-limit`` set to ``DLQ_DELIVERY_LIMIT``. It has
no dead-letter target, so a message past its limit would be dropped, and since RabbitMQ 4.0
quorum queues default to a limit of 20. Every ``dlq list`` (get, then return on close) and
every failed replay counts as a delivery: after 20 of them a dead letter would vanish. The
limit is explicit and effectively unreachable; a positive number, because 3.10 rejects the
``-1`` that 4.x reads as "no limit".
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pika.exceptions

from service.settings import Settings
from workers.amqp import AmqpError

log = logging.getLogger("reco.topology")

FEATURE_CONSUMER = "features"
BINDING_KEY = "interaction.#"
DLQ_DELIVERY_LIMIT = 2**31 - 1  # unreachable, and fits the signed 32-bit field pika sends


@dataclasses.dataclass(frozen=True)
class Topology:
    """Names and arguments derived from settings; nothing here talks to the broker."""

    exchange: str
    queue: str
    dlx: str
    dlq: str
    queue_arguments: dict[str, Any]
    dlq_arguments: dict[str, Any]
    binding_key: str = BINDING_KEY


def topology(settings: Settings) -> Topology:
    """Build the topology for ``settings.amqp_namespace``."""
    ns = settings.amqp_namespace
    dlx = f"{ns}.events.dlx"
    return Topology(
        exchange=f"{ns}.events",
        queue=f"{ns}.{FEATURE_CONSUMER}",
        dlx=dlx,
        dlq=f"{ns}.{FEATURE_CONSUMER}.dlq",
        queue_arguments=queue_arguments(settings, dlx),
        dlq_arguments={"x-queue-type": "quorum", "x-delivery-limit": DLQ_DELIVERY_LIMIT},
    )


def queue_arguments(settings: Settings, dlx: str) -> dict[str, Any]:
    """Arguments of the feature queue (immutable once declared: change means a new queue)."""
    if settings.delivery_limit < 1:
        raise ValueError("delivery_limit must be at least 1")
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": dlx,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if settings.queue_max_length > 0:
        arguments["x-max-length"] = settings.queue_max_length
    return arguments


def declare(link: Any, topo: Topology, timeout: float) -> None:
    """Declare exchanges, queues and bindings on ``link`` (a workers.amqp.Link); idempotent."""
    channel = link.require()
    link.call(
        lambda cb: channel.exchange_declare(topo.exchange, "topic", durable=True, callback=cb),
        timeout,
    )
    link.call(
        lambda cb: channel.exchange_declare(topo.dlx, "topic", durable=True, callback=cb),
        timeout,
    )
    channel = _declare_dlq(link, topo, timeout)
    link.call(lambda cb: channel.queue_bind(topo.dlq, topo.dlx, "#", callback=cb), timeout)
    link.call(
        lambda cb: channel.queue_declare(
            topo.queue, durable=True, arguments=topo.queue_arguments, callback=cb
        ),
        timeout,
    )
    link.call(
        lambda cb: channel.queue_bind(topo.queue, topo.exchange, topo.binding_key, callback=cb),
        timeout,
    )


def open_confirming(link: Any, topo: Topology, timeout: float, on_confirm, on_return) -> Any:
    """Open ``link``, declare the topology, put its channel in confirm mode; return the channel."""
    link.open()
    declare(link, topo, timeout)
    channel = link.require()
    channel.add_on_return_callback(on_return)
    link.call(lambda cb: channel.confirm_delivery(on_confirm, callback=cb), timeout)
    return channel


def _declare_dlq(link: Any, topo: Topology, timeout: float) -> Any:
    """Declare the DLQ; keep one declared before it had a delivery limit; return the channel.

    Queue arguments are immutable, so redeclaring an older DLQ with the limit fails with
    PRECONDITION_FAILED. Refusing to start would halt the pipeline over a queue that still
    works; warn instead (docs/events.md says how to recreate it) and use it as it is.
    """
    channel = link.require()
    try:
        link.call(
            lambda cb: channel.queue_declare(
                topo.dlq, durable=True, arguments=topo.dlq_arguments, callback=cb
            ),
            timeout,
        )
        return channel
    except AmqpError:
        if not _delivery_limit_differs(link.error):
            raise
    log.warning(
        "dead-letter queue declared with another delivery limit; using it as it is",
        extra={"queue": topo.dlq, "error": str(link.error)[:300]},
    )
    channel = link.reopen_channel(timeout)  # the broker closed the channel that declared
    link.call(lambda cb: channel.queue_declare(topo.dlq, passive=True, callback=cb), timeout)
    return channel


def _delivery_limit_differs(error: BaseException | None) -> bool:
    """Tell whether the broker refused a declaration over ``x-delivery-limit`` alone."""
    return (
        isinstance(error, pika.exceptions.ChannelClosedByBroker)
        and error.reply_code == 406
        and "'x-delivery-limit'" in error.reply_text
    )
