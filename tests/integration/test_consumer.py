"""The feature consumer against the private PostgreSQL and RabbitMQ: dedupe, poison, kills."""

from __future__ import annotations

import dataclasses

import orjson
import pika
import pytest

from harness.bench.workers import Publisher, make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import (
    WorkerProcess,
    applied_count,
    assert_audit,
    drain_consumer,
    drain_relay,
    wait_until,
)
from service.events import KIND_WEIGHTS
from workers.amqp import AmqpError
from workers.consumer import PausedForDatabase
from workers.messages import properties_for
from workers.topology import topology

amqp_channel = plugin.amqp_channel
tcp_proxy = plugin.tcp_proxy
worker_objects = plugin.worker_objects
worker_procs = plugin.worker_procs

FEATURES = """
SELECT 'pop', item_id::text, views, clicks, purchases, round((score - prior)::numeric, 6)::text,
       last_at::text
FROM item_popularity WHERE views + clicks + purchases > 0
UNION ALL
SELECT 'aff', user_id || '/' || category_id, 0, 0, 0, round(weight::numeric, 6)::text, NULL
FROM user_category_affinity
UNION ALL
SELECT 'uii', user_id || '/' || item_id, interactions, 0, 0, NULL, last_at::text
FROM user_item_interactions
ORDER BY 1, 2
"""

# The same features computed independently, from the events table: one effect per event.
EXPECTED = """
WITH e AS (SELECT e.*, i.category_id, w.weight FROM events e JOIN items i USING (item_id)
           JOIN (VALUES ('view', %(view)s), ('click', %(click)s), ('purchase', %(purchase)s))
                AS w(kind, weight) USING (kind))
SELECT 'pop', item_id::text, count(*) FILTER (WHERE kind = 'view'),
       count(*) FILTER (WHERE kind = 'click'), count(*) FILTER (WHERE kind = 'purchase'),
       round(sum(weight)::numeric, 6)::text, max(occurred_at)::text
FROM e GROUP BY item_id
UNION ALL
SELECT 'aff', user_id || '/' || category_id, 0, 0, 0, round(sum(weight)::numeric, 6)::text, NULL
FROM e GROUP BY user_id, category_id
UNION ALL
SELECT 'uii', user_id || '/' || item_id, count(*), 0, 0, NULL, max(occurred_at)::text
FROM e GROUP BY user_id, item_id
ORDER BY 1, 2
"""


def _rows(db, sql: str, params=None) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _assert_features_match_events(db) -> None:
    assert _rows(db, FEATURES) == _rows(db, EXPECTED, KIND_WEIGHTS)


def _seed(settings, n: int, users: int = 20) -> list[str]:
    events = make_events(n, users=users)
    seed_outbox(settings.database_url, events, with_events=True)
    return [e.event_id for e in events]


def _sample(consumer, name: str, labels=None) -> float:
    return consumer.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_consumer_applies_each_event_once_and_records_its_age(settings, db, worker_objects):
    _seed(settings, 300)
    drain_relay(worker_objects.relay(settings))
    consumer = worker_objects.consumer(settings)
    drain_consumer(consumer, 300)
    _assert_features_match_events(db)
    mismatched = _rows(
        db,
        "SELECT count(*) FROM inbox i JOIN outbox o USING (event_id)"
        " WHERE i.event_created IS DISTINCT FROM o.created_at",
    )
    assert mismatched == [(0,)]  # latency = applied_at - event_created (outbox created_at)
    assert _sample(consumer, "reco_consumer_applied_total") == 300
    assert _sample(consumer, "reco_consumer_event_age_seconds_count") == 300
    assert _sample(consumer, "reco_consumer_batch_size_count") >= 300 / 100
    assert_audit(settings)


def test_every_message_delivered_twice_leaves_features_as_single_delivery(
    settings, db, worker_objects
):
    _seed(settings, 200)
    rows = _rows(
        db,
        "SELECT id, event_id::text, event_type, routing_key, payload, headers, created_at"
        " FROM outbox ORDER BY id",
    )
    # A duplicating tap: each row published twice back to back (same batch), then again later.
    messages = [
        (key, bytes(payload), properties_for(row_id, event_id, etype, headers, created))
        for row_id, event_id, etype, key, payload, headers, created in rows
    ]
    publisher = Publisher(settings)
    try:
        publisher.publish([m for m in messages for _ in range(2)])
        with db.cursor() as cur:
            cur.execute("UPDATE outbox SET published_at = clock_timestamp(), attempts = 1")
        consumer = worker_objects.consumer(settings)
        drain_consumer(consumer, 200)
        publisher.publish(messages)
    finally:
        publisher.close()
    wait_until(lambda: _consume_step(consumer) >= 600, 20, "every copy consumed")
    _assert_features_match_events(db)
    assert _sample(consumer, "reco_consumer_duplicates_total") == 400
    assert_audit(settings)


def _consume_step(consumer) -> float:
    if consumer.run_once() == 0:
        consumer.wait(0.05)
    return _sample(consumer, "reco_consumer_consumed_total")


@pytest.mark.parametrize(
    ("pause_point", "applied_before_restart"),
    [("consumer_pause_before_commit", False), ("consumer_pause_after_commit", True)],
)
def test_sigkill_around_the_commit_still_applies_each_event_once(
    settings, db, tmp_path, worker_objects, worker_procs, pause_point, applied_before_restart
):
    _seed(settings, 120)
    drain_relay(worker_objects.relay(settings))
    proc = WorkerProcess.start(
        "consumer", settings, tmp_path, env={"RECO_UNSAFE_TEST_FAULTS": pause_point}
    )
    worker_procs.append(proc)
    paused = proc.wait_for_log("test pause")
    proc.kill()
    applied = applied_count(settings.database_url)
    assert applied == (paused["batch"] if applied_before_restart else 0)
    consumer = worker_objects.consumer(settings)
    drain_consumer(consumer, 120)
    # The redelivered batch is absorbed by the inbox rows committed before the kill.
    assert _sample(consumer, "reco_consumer_duplicates_total") == applied
    _assert_features_match_events(db)
    assert_audit(settings)


POISON = [
    ("undecodable", {}, b"\xff\xfe not json"),
    ("unknown message type", {"type": "order.placed"}, None),
    ("unsupported version", {}, {"version": 2}),
    ("invalid kind", {}, {"kind": "like"}),
]


def test_poison_goes_to_the_dlq_with_a_reason_and_valid_messages_keep_flowing(
    settings, db, amqp_channel, worker_objects
):
    topo = topology(settings)
    relay = worker_objects.relay(settings)
    _seed(settings, 30)
    drain_relay(relay)
    template = make_events(1)[0]
    for reason, prop_changes, body in POISON:
        payload = body if isinstance(body, bytes) else template.to_payload()
        if isinstance(body, dict):
            payload = orjson.dumps({**orjson.loads(payload), **body})
        props = pika.BasicProperties(
            message_id=template.event_id,
            type=prop_changes.get("type", template.TYPE),
            delivery_mode=2,
            headers={"request_id": f"poison-{reason}"},
        )
        amqp_channel.basic_publish(topo.exchange, template.routing_key, payload, props)
    _seed(settings, 30)
    drain_relay(relay)
    consumer = worker_objects.consumer(settings)
    drain_consumer(consumer, 60)
    wait_until(lambda: _dlq_depth(amqp_channel, topo) == 4, 10, "poison in the DLQ")
    reasons = []
    for _ in range(4):  # taken unacked, returned together: a requeued one would come back first
        method, props, _body = amqp_channel.basic_get(topo.dlq, auto_ack=False)
        reasons.append(props.headers["x-reco-dead-reason"])
        assert props.headers["x-reco-original-routing-key"] == template.routing_key
    amqp_channel.basic_nack(method.delivery_tag, multiple=True, requeue=True)
    for expected, _, _ in POISON:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert (
        sum(
            _sample(consumer, "reco_consumer_dead_lettered_total", {"reason": r})
            for r in ("undecodable", "unknown", "unsupported", "invalid")
        )
        == 4
    )
    _assert_features_match_events(db)
    assert_audit(settings, expected_dlq=4)


def _dlq_depth(channel, topo) -> int:
    return channel.queue_declare(topo.dlq, passive=True).method.message_count


def test_database_outage_pauses_consuming_and_never_burns_the_delivery_limit(
    settings, pg_instance, tmp_path, tcp_proxy, worker_objects, worker_procs
):
    # A delivery limit of 2 turns any requeue storm into dead letters the audit would see.
    settings = dataclasses.replace(settings, delivery_limit=2, backoff_max_s=1.0)
    proxy = tcp_proxy(pg_instance.host, pg_instance.port)
    via_proxy = dataclasses.replace(settings, database_url=proxy.url_for(settings.database_url))
    _seed(settings, 3000)
    drain_relay(worker_objects.relay(settings))
    consumer = WorkerProcess.start(
        "consumer", via_proxy, tmp_path, env={"RECO_CONSUMER_BATCH_SIZE": "5"}
    )
    worker_procs.append(consumer)
    wait_until(lambda: applied_count(settings.database_url) > 100, 20, "consuming", 0.01)
    proxy.cut()  # mid-flow: the batch in hand fails, later connects are refused
    consumer.wait_for_log("database failed; consuming paused, batch held unacked")
    consumer.wait_for_log("consuming paused")
    wait_until(
        lambda: _count_logs(consumer, "worker iteration failed; backing off") >= 4,
        30,
        "the consumer backing off",
    )
    stalled = applied_count(settings.database_url)
    assert stalled < 3000
    proxy.restore()
    wait_until(lambda: applied_count(settings.database_url) == 3000, 60, "backlog applied")
    metrics = consumer.get("/metrics")[1]
    assert "reco_consumer_paused 0.0" in metrics
    assert f'reco_queue_depth{{queue="{topology(settings).dlq}"}} 0.0' in metrics
    assert consumer.stop() == 0
    assert_audit(settings)  # DLQ empty: expected_dlq defaults to 0


def _count_logs(proc, msg: str) -> int:
    return sum(1 for record in proc.log_records() if record.get("msg") == msg)


def test_a_held_batch_of_a_dead_channel_is_dropped_not_acked(
    settings, db, pg_instance, tcp_proxy, worker_objects
):
    proxy = tcp_proxy(pg_instance.host, pg_instance.port)
    _seed(settings, 80)
    drain_relay(worker_objects.relay(settings))
    consumer = worker_objects.consumer(
        dataclasses.replace(settings, database_url=proxy.url_for(settings.database_url))
    )
    consumer.run_once()  # connected, nothing taken yet or a first batch applied
    proxy.cut()
    with pytest.raises(PausedForDatabase):
        for _ in range(50):
            consumer.run_once()
            consumer.wait(0.05)
    assert consumer.held and consumer.paused
    generation = consumer.link.generation
    consumer.link.close()  # the broker requeues everything unacked on that channel
    proxy.restore()
    with pytest.raises(AmqpError, match="broker link lost"):
        consumer.run_once()  # a lost link fails the iteration (the runner backs off)...
    assert not consumer.held
    drain_consumer(consumer, 80)  # ...and the next one opens a new one
    assert consumer.link.generation == generation + 1 and consumer.link.alive
    _assert_features_match_events(db)
    assert_audit(settings)


def test_a_link_whose_set_up_failed_is_dropped_not_kept_half_set_up(
    settings, db, worker_objects, monkeypatch
):
    """A declare that timed out on a live connection must not leave a link that never consumes."""
    from workers import topology as topology_module

    _seed(settings, 50)
    drain_relay(worker_objects.relay(settings))
    declare, calls = topology_module.declare, []

    def slow_once(link, topo, timeout):
        calls.append(1)
        if len(calls) == 1:
            raise AmqpError("operation timed out")  # as a broker too slow to answer would
        return declare(link, topo, timeout)

    monkeypatch.setattr(topology_module, "declare", slow_once)
    consumer = worker_objects.consumer(settings)
    with pytest.raises(AmqpError, match="timed out") as failed:
        consumer.run_once()
    consumer.reset(failed.value)  # what the runner does before it backs off
    assert consumer.link is None
    drain_consumer(consumer, 50, timeout=10)
    assert len(calls) == 2 and consumer.link.alive
    _assert_features_match_events(db)
    assert_audit(settings)


def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    settings, tmp_path, worker_objects, worker_procs
):
    _seed(settings, 600)
    consumer = WorkerProcess.start(
        "consumer", settings, tmp_path, env={"RECO_CONSUMER_BATCH_SIZE": "20"}
    )
    worker_procs.append(consumer)
    drain_relay(worker_objects.relay(settings))
    wait_until(lambda: applied_count(settings.database_url) > 0, 20, "consuming started")
    assert consumer.stop() == 0
    messages = [r.get("msg") for r in consumer.log_records()]
    assert "could not finish in-flight deliveries; they will be redelivered" not in messages
    assert messages[-1] == "worker stopped"
    drain_consumer(worker_objects.consumer(settings), 600)
    assert_audit(settings)


def test_dlq_tool_lists_then_replays_dead_letters_at_least_once(
    settings, db, amqp_channel, worker_objects
):
    from workers.dlq import run

    topo = topology(settings)
    worker_objects.relay(settings).run_once()  # declares the topology
    _seed(settings, 5)
    rows = _rows(
        db,
        "SELECT id, event_id::text, event_type, routing_key, payload, headers, created_at"
        " FROM outbox",
    )
    with db.cursor() as cur:
        cur.execute("UPDATE outbox SET published_at = clock_timestamp(), attempts = 1")
    for row_id, event_id, etype, key, payload, headers, created in rows:
        # As if the broker dead-lettered them after the delivery limit.
        props = properties_for(row_id, event_id, etype, headers, created)
        props.headers["x-death"] = [{"reason": "delivery_limit", "routing-keys": [key]}]
        amqp_channel.basic_publish(topo.dlx, key, bytes(payload), props)
    wait_until(lambda: _dlq_depth(amqp_channel, topo) == 5, 10, "dead letters")
    lines: list[str] = []
    assert run(settings, "list", 3, lines.append) == 0
    listed = [orjson.loads(line) for line in lines]
    assert [entry["reason"] for entry in listed[:3]] == ["delivery_limit"] * 3
    assert listed[-1] == {"command": "list", "messages": 3, "failures": 0}
    wait_until(lambda: _dlq_depth(amqp_channel, topo) == 5, 10, "listed messages back")
    lines.clear()
    assert run(settings, "replay", 100, lines.append) == 0
    assert orjson.loads(lines[-1]) == {"command": "replay", "messages": 5, "failures": 0}
    assert _dlq_depth(amqp_channel, topo) == 0
    drain_consumer(worker_objects.consumer(settings), 5)
    _assert_features_match_events(db)
    assert_audit(settings)
