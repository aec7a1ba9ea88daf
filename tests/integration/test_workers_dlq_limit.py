"""The dead-letter queue's delivery limit: declared, survived by repeated listing, and upgrades.

The DLQ has no dead-letter target of its own, so a message past its delivery limit is dropped.
RabbitMQ 4.x gives quorum queues a default limit of 20, and every ``dlq list`` (get without
ack, returned on close) counts as a delivery.
"""

from __future__ import annotations

import logging

import orjson
import pika
import pika.exceptions
import pytest

from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import wait_until
from workers.topology import DLQ_DELIVERY_LIMIT, topology

amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects

LISTS = 25  # more than the 4.x default limit of 20


def _depth(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def _dead_letter(channel, topo, message_id: str) -> None:
    props = pika.BasicProperties(
        message_id=message_id,
        delivery_mode=2,
        headers={"x-death": [{"reason": "delivery_limit", "routing-keys": ["interaction.x"]}]},
    )
    channel.basic_publish(topo.dlx, "interaction.recorded.view", b"{}", props)


def test_the_declared_dlq_carries_the_delivery_limit(settings, rabbit_instance, worker_objects):
    worker_objects.relay(settings).run_once()  # declares the topology
    topo = topology(settings)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_instance.url))
    try:
        # Arguments are compared on redeclaration: one without the limit is refused, naming it.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().queue_declare(
                topo.dlq, durable=True, arguments={"x-queue-type": "quorum"}
            )
    finally:
        connection.close()
    assert refused.value.reply_code == 406
    assert "'x-delivery-limit'" in refused.value.reply_text
    assert f"current is the value '{DLQ_DELIVERY_LIMIT}'" in refused.value.reply_text


def test_listing_the_dlq_again_and_again_keeps_every_dead_letter(
    settings, amqp_channel, worker_objects
):
    from workers.dlq import run

    worker_objects.relay(settings).run_once()
    topo = topology(settings)
    _dead_letter(amqp_channel, topo, "kept-1")
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the dead letter")
    for _ in range(LISTS):
        lines: list[str] = []
        assert run(settings, "list", 10, lines.append) == 0
        assert orjson.loads(lines[-1])["messages"] == 1, lines
        wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the listed message back")
    method, props, _body = amqp_channel.basic_get(topo.dlq, auto_ack=False)
    assert method is not None and props.message_id == "kept-1"
    # RabbitMQ 3.x counts every return on close: with a limit of 20 it would be gone by now.
    assert (props.headers or {}).get("x-delivery-count", LISTS) >= LISTS
    amqp_channel.basic_nack(method.delivery_tag, requeue=True)


def test_a_dlq_declared_before_the_limit_is_used_as_it_is_with_a_warning(
    settings, amqp_channel, worker_objects, caplog
):
    topo = topology(settings)
    # As an earlier version declared it, holding a dead letter that must survive the upgrade.
    amqp_channel.exchange_declare(topo.dlx, "topic", durable=True)
    amqp_channel.queue_declare(topo.dlq, durable=True, arguments={"x-queue-type": "quorum"})
    amqp_channel.queue_bind(topo.dlq, topo.dlx, "#")
    _dead_letter(amqp_channel, topo, "old-1")
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the old dead letter")
    with caplog.at_level(logging.WARNING, logger="reco.topology"):
        relay = worker_objects.relay(settings)
        assert relay.run_once() == 0  # connected and declared: the pipeline runs
        consumer = worker_objects.consumer(settings)
        assert consumer.run_once() == 0
    assert relay.link.alive and consumer.link.alive
    warnings = [r for r in caplog.records if r.name == "reco.topology"]
    assert len(warnings) == 2 and "another delivery limit" in warnings[0].getMessage()
    assert _depth(amqp_channel, topo.dlq) == 1
