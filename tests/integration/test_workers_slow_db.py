"""Slow database work must not starve the AMQP link: heartbeats keep flowing while it runs.

With a 1 s heartbeat the broker closes a connection that stays silent for about 2 s. A job on
the database thread that takes longer (a retention purge, a commit waiting on locks) used to
block the worker's thread in future.result() without stepping the ioloop.
"""

from __future__ import annotations

import dataclasses
import time

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import applied_count, assert_audit, drain_consumer, drain_relay

worker_objects = plugin.worker_objects

STALL_S = 4.0  # twice the broker's patience with a 1 s heartbeat


def _seed(settings, n: int) -> None:
    seed_outbox(settings.database_url, make_events(n, users=20), with_events=True)


def _published(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        return cur.fetchone()[0]


def _stalled_once(job, stalls: list[float]):
    """``job`` that first sleeps once (on the calling thread: the database thread)."""

    def run(*args):
        if stalls:
            time.sleep(stalls.pop())
        return job(*args)

    return run


def test_relay_link_survives_a_slow_commit(settings, db, worker_objects, monkeypatch):
    settings = dataclasses.replace(settings, amqp_heartbeat_s=1)
    _seed(settings, 40)
    relay = worker_objects.relay(settings)
    assert relay.run_once() == 40  # published; its mark and commit come next
    link, stalls = relay.link, [STALL_S]
    monkeypatch.setattr(relay, "_settle_rows", _stalled_once(relay._settle_rows, stalls))
    started = time.monotonic()
    assert relay.run_once() == 40  # waits for the slow commit: no further claim to publish
    assert not stalls and time.monotonic() - started >= STALL_S
    link.step(0.5)  # a connection the broker closed would be noticed here
    assert relay.link is link and link.alive, link.error
    assert _published(db) == 40
    assert drain_relay(relay) == 0 and relay.link is link
    drain_consumer(worker_objects.consumer(settings), 40)
    assert_audit(settings)


def test_consumer_link_survives_a_slow_commit(settings, worker_objects, monkeypatch):
    settings = dataclasses.replace(settings, amqp_heartbeat_s=1)
    _seed(settings, 60)
    drain_relay(worker_objects.relay(settings))
    consumer = worker_objects.consumer(settings)
    stalls = [STALL_S]
    monkeypatch.setattr(consumer.applier, "_apply", _stalled_once(consumer.applier._apply, stalls))
    consumer.run_once()  # connected and subscribed
    generation = consumer.link.generation
    drain_consumer(consumer, 60)
    assert not stalls  # one batch committed slowly, acked afterwards on the same channel
    assert consumer.link.alive and consumer.link.generation == generation
    # A closed channel would have lost the ack: the batch redelivered, counted as duplicates.
    assert not consumer.metrics.registry.get_sample_value("reco_consumer_duplicates_total")
    assert applied_count(settings.database_url) == 60
    assert_audit(settings)
