"""The consumer against a database that refuses writes for its own reasons, not the messages'.

A read-only primary after a failover (SQLSTATE 25006), a missing table or privilege: none of
these is poison. The consumer must hold the batch unacked, pause, dead-letter nothing and
resume by itself once the database accepts the writes again.
"""

from __future__ import annotations

import dataclasses

import psycopg2.errors

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import (
    WorkerProcess,
    applied_count,
    assert_audit,
    drain_consumer,
    drain_relay,
    wait_until,
)
from workers.consumer import PausedForDatabase
from workers.topology import topology

amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects
worker_procs = plugin.worker_procs

# While a row is in test_read_only, every insert into the inbox fails the way a demoted
# primary refuses writes (psycopg2 raises it as InternalError, not as a data error).
READ_ONLY_WHILE_FLAGGED = """
CREATE TABLE test_read_only (since timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION test_refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM test_read_only) THEN
        RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction'
            USING ERRCODE = '25006';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_read_only BEFORE INSERT ON inbox
    FOR EACH STATEMENT EXECUTE FUNCTION test_refuse_writes();
INSERT INTO test_read_only DEFAULT VALUES;
"""


def _seed(settings, n: int) -> None:
    seed_outbox(settings.database_url, make_events(n, users=20), with_events=True)


def _depth(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def _count_logs(proc, msg: str) -> int:
    return sum(1 for record in proc.log_records() if record.get("msg") == msg)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_read_only_database_pauses_the_consumer_and_dead_letters_nothing(
    settings, db, amqp_channel, tmp_path, worker_objects, worker_procs
):
    # A delivery limit of 2: a requeue storm would show up as dead letters as well.
    settings = dataclasses.replace(settings, delivery_limit=2, backoff_max_s=1.0)
    topo = topology(settings)
    with db.cursor() as cur:
        cur.execute(READ_ONLY_WHILE_FLAGGED)
    _seed(settings, 200)
    drain_relay(worker_objects.relay(settings))
    consumer = WorkerProcess.start(
        "consumer", settings, tmp_path, env={"RECO_CONSUMER_BATCH_SIZE": "20"}
    )
    worker_procs.append(consumer)
    held = consumer.wait_for_log("database failed; consuming paused, batch held unacked")
    assert held["error"] == "ReadOnlySqlTransaction"
    wait_until(
        lambda: _count_logs(consumer, "worker iteration failed; backing off") >= 4,
        30,
        "the consumer retrying with backoff",
    )
    metrics = consumer.get("/metrics")[1]
    assert _metric(metrics, "reco_consumer_paused") == 1.0
    assert _metric(metrics, "reco_consumer_consumed_total") == 0.0  # nothing acked
    # The held batch and whatever arrived behind it, all unacked (the audit waits for them).
    assert _metric(metrics, "reco_consumer_unacked_deliveries") >= 20
    assert "reco_consumer_dead_lettered_total{" not in metrics
    assert applied_count(settings.database_url) == 0
    assert _depth(amqp_channel, topo.dlq) == 0

    with db.cursor() as cur:
        cur.execute("DELETE FROM test_read_only")  # the new primary accepts writes
    wait_until(lambda: applied_count(settings.database_url) == 200, 30, "every event applied")
    wait_until(lambda: _depth(amqp_channel, topo.queue) == 0, 10, "the queue drained")
    metrics = consumer.get("/metrics")[1]
    assert _metric(metrics, "reco_consumer_paused") == 0.0
    assert _metric(metrics, "reco_consumer_applied_total") == 200
    assert _metric(metrics, "reco_consumer_unacked_deliveries") == 0.0
    assert consumer.stop() == 0
    assert_audit(settings)  # one effect per event, queue drained, DLQ empty


def test_a_table_missing_when_the_consumer_connects_holds_the_batch(
    settings, db, amqp_channel, worker_objects
):
    # PREPARE fails with 42P01 (ProgrammingError) in applier.ensure(), before any apply.
    settings = dataclasses.replace(settings, delivery_limit=2)
    _seed(settings, 50)
    drain_relay(worker_objects.relay(settings))
    with db.cursor() as cur:
        cur.execute("ALTER TABLE inbox RENAME TO inbox_elsewhere")
    consumer = worker_objects.consumer(settings)
    failures = []
    for _ in range(200):
        try:
            consumer.run_once()
        except PausedForDatabase as exc:
            failures.append(exc)
            consumer.reset(exc)  # as the runner does before its backoff
            if len(failures) == 3:
                break
        consumer.wait(0.05)
    assert len(failures) == 3
    assert all(isinstance(f.__cause__, psycopg2.errors.UndefinedTable) for f in failures)
    assert consumer.held and consumer.paused
    assert _depth(amqp_channel, topology(settings).dlq) == 0

    with db.cursor() as cur:
        cur.execute("ALTER TABLE inbox_elsewhere RENAME TO inbox")
    drain_consumer(consumer, 50)
    assert not consumer.paused
    assert consumer.metrics.registry.get_sample_value("reco_consumer_applied_total") == 50
    assert_audit(settings)
