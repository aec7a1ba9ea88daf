"""A replay run handles each dead letter once, even when it comes straight back to the DLQ."""

from __future__ import annotations

import dataclasses

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


def test_a_replay_into_a_full_queue_keeps_the_dead_letter(settings, amqp_channel, worker_objects):
    from workers.dlq import run

    full = dataclasses.replace(settings, queue_max_length=2)
    worker_objects.relay(full).run_once()  # declares the topology with x-max-length 2
    topo = topology(full)
    # A quorum queue refuses publishes once its length is over x-max-length (at the limit
    # it still takes one more): three messages put it over.
    for _ in range(3):
        amqp_channel.basic_publish(topo.exchange, "interaction.recorded.view", b"{}")
    wait_until(lambda: _depth(amqp_channel, topo.queue) == 3, 10, "the queue over its length")
    props = pika.BasicProperties(message_id="kept", delivery_mode=2)
    amqp_channel.basic_publish(topo.dlx, "interaction.recorded.view", b"{}", props)
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the dead letter")

    lines: list[str] = []
    # reject-publish: the broker nacks the copy, so the DLQ's is not acked (exit 1).
    assert run(full, "replay", 10, lines.append) == 1
    entry = orjson.loads(lines[0])
    assert entry["message_id"] == "kept" and entry["replayed"] is False
    assert "NackError" in entry["error"]
    assert orjson.loads(lines[-1]) == {"command": "replay", "messages": 0, "failures": 1}
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the dead letter kept")
    assert _depth(amqp_channel, topo.queue) == 3


def test_drop_deletes_only_the_named_dead_letters(settings, amqp_channel, worker_objects):
    from workers.dlq import run

    worker_objects.relay(settings).run_once()
    topo = topology(settings)
    for message_id in ("garbage-1", "keep-1", "garbage-2", "garbage-1"):
        props = pika.BasicProperties(message_id=message_id, delivery_mode=2)
        amqp_channel.basic_publish(topo.dlx, "interaction.recorded.view", b"{}", props)
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 4, 10, "the dead letters")

    lines: list[str] = []
    # "missing-1" is not there: the run says so and exits 1, having dropped the rest.
    ids = frozenset({"garbage-1", "garbage-2", "missing-1"})
    assert run(settings, "drop", 10, lines.append, ids=ids) == 1
    dropped = [orjson.loads(line) for line in lines[:-1]]
    assert sorted(d["message_id"] for d in dropped) == ["garbage-1", "garbage-1", "garbage-2"]
    assert all(d["dropped"] for d in dropped)
    assert orjson.loads(lines[-1]) == {
        "command": "drop",
        "messages": 3,
        "failures": 1,
        "not_found": ["missing-1"],
    }
    wait_until(lambda: _depth(amqp_channel, topo.dlq) == 1, 10, "the one kept")
    method, props, _body = amqp_channel.basic_get(topo.dlq, auto_ack=False)
    assert method is not None and props.message_id == "keep-1"
    amqp_channel.basic_nack(method.delivery_tag, requeue=True)
