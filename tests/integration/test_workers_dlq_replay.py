"""A replay run handles each dead letter once, even when it comes straight back to the DLQ."""

from __future__ import annotations

import orjson
import pika

from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import wait_until
from workers.topology import topology

amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects


def _depth(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def test_unfixed_poison_is_replayed_once_per_run_not_until_the_limit(
    settings, amqp_channel, worker_objects
):
    from workers.dlq import run

    worker_objects.relay(settings).run_once()  # declares the topology
    topo = topology(settings)
    # Stands in for a consumer that dead-letters the replayed copy again at once.
    amqp_channel.queue_bind(topo.dlq, topo.exchange, topo.binding_key)
    for n in range(3):
        props = pika.BasicProperties(
            message_id=f"poison-{n}",
            delivery_mode=2,
            headers={"x-reco-dead-reason": "undecodable"},
        )
        amqp_channel.basic_publish(topo.dlx, "interaction.recorded.view", b"garbage", props)
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 3, 10, "the dead letters")

    lines: list[str] = []
    assert run(settings, "replay", 50, lines.append) == 0
    replayed = [orjson.loads(line) for line in lines[:-1]]
    assert sorted(entry["message_id"] for entry in replayed) == [f"poison-{n}" for n in range(3)]
    assert {entry["replays"] for entry in replayed} == {0}
    assert orjson.loads(lines[-1]) == {"command": "replay", "messages": 3, "failures": 0}
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 3, 10, "the poison back in the DLQ")
