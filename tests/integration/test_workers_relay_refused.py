"""Rows the broker returns or nacks stay pending, and the relay backs off instead of spinning."""

from __future__ import annotations

import dataclasses
import time

import pytest

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import (
    WorkerProcess,
    assert_audit,
    drain_consumer,
    pending_rows,
    wait_until,
)
from workers.amqp import PublishRefused
from workers.topology import topology

amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects
worker_procs = plugin.worker_procs

UNBOUND_S = 3.0


def _seed(settings, n: int) -> None:
    seed_outbox(settings.database_url, make_events(n, users=20), with_events=True)


def _attempts(db) -> tuple[int, int, int]:
    with db.cursor() as cur:
        cur.execute("SELECT count(*), min(attempts), max(attempts) FROM outbox")
        return cur.fetchone()


def _retry_at_once(settings):
    """Settings whose refused rows are claimable again at once: the runner's backoff alone."""
    return dataclasses.replace(settings, relay_retry_base_s=0.0)


def _relay_without_binding(settings, amqp_channel, worker_objects):
    """An in-process relay with its topology declared, then the queue's binding removed."""
    relay = worker_objects.relay(settings)
    relay.run_once()  # connects and declares the topology
    topo = topology(settings)
    amqp_channel.queue_unbind(topo.queue, topo.exchange, topo.binding_key)
    return relay, topo


def test_a_refused_batch_fails_the_iteration_after_it_settled(
    settings, db, amqp_channel, worker_objects
):
    settings = _retry_at_once(settings)
    relay, topo = _relay_without_binding(settings, amqp_channel, worker_objects)
    _seed(settings, 30)
    assert relay.run_once() == 30  # published; settled by the next iteration
    with pytest.raises(PublishRefused, match="all 30 rows"):
        relay.run_once()
    assert _attempts(db) == (30, 1, 1)  # recorded and committed before the failure
    assert relay.inflight is None and not relay.ready  # nothing left open to roll back
    relay.reset(PublishRefused("as the runner does"))
    with pytest.raises(PublishRefused):
        relay.run_once()  # the retry is settled in its own iteration: it fails there
    assert _attempts(db) == (30, 2, 2) and relay.probing
    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    assert relay.run_once() == 30  # published and settled at once
    assert pending_rows(settings.database_url) == 0 and not relay.probing
    assert relay.link.alive  # a refused publish is no reason to reconnect
    drain_consumer(worker_objects.consumer(settings), 30)
    assert_audit(settings)


def test_a_partly_refused_batch_keeps_the_pipeline_going(
    settings, db, amqp_channel, worker_objects
):
    settings = _retry_at_once(settings)
    relay, topo = _relay_without_binding(settings, amqp_channel, worker_objects)
    amqp_channel.queue_bind(topo.queue, topo.exchange, "interaction.recorded.view")  # a third
    _seed(settings, 30)
    assert relay.run_once() == 30
    assert relay.flush() == 30  # settles without PublishRefused: some rows were taken
    assert not relay.probing
    with db.cursor() as cur:
        cur.execute(
            "SELECT routing_key, count(*) FROM outbox WHERE published_at IS NULL GROUP BY 1"
        )
        assert dict(cur.fetchall()) == {
            "interaction.recorded.click": 10,
            "interaction.recorded.purchase": 10,
        }
    db.commit()
    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    assert relay.run_once() == 20
    relay.flush()
    assert pending_rows(settings.database_url) == 0
    drain_consumer(worker_objects.consumer(settings), 30)
    assert_audit(settings)


def test_relay_backs_off_while_rows_are_unroutable_and_recovers_after_the_rebind(
    settings, db, amqp_channel, tmp_path, worker_objects, worker_procs
):
    settings = dataclasses.replace(
        settings, backoff_max_s=1.0, relay_retry_base_s=0.1, relay_retry_max_s=1.0
    )
    topo = topology(settings)
    relay = WorkerProcess.start("relay", settings, tmp_path)
    worker_procs.append(relay)
    relay.wait_for_log("connected to broker")  # it declared the binding: remove it now
    amqp_channel.queue_unbind(topo.queue, topo.exchange, topo.binding_key)
    _seed(settings, 40)
    wait_until(lambda: _attempts(db)[1] >= 1, 10, "a first attempt")
    time.sleep(UNBOUND_S)
    rows, low, high = _attempts(db)
    # Backoff and row retries 0.1 s doubling to the 1 s cap: a few attempts in 3 s (a hot
    # loop made hundreds).
    assert rows == 40 and 2 <= low <= high <= 12, (low, high)
    failures = relay.logged("worker iteration failed; backing off")
    assert failures and {r["error"] for r in failures} == {"PublishRefused"}
    assert not relay.logged("connected to broker")[1:]
    metrics = relay.get("/metrics")[1]
    assert 'reco_relay_publish_failed_total{reason="unroutable"}' in metrics
    assert 'reco_relay_errors_total{kind="amqp"}' in metrics

    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    rebound = time.monotonic()
    wait_until(lambda: pending_rows(settings.database_url) == 0, 10, "the backlog published")
    assert time.monotonic() - rebound < 3.0  # at most one capped backoff and one row retry
    assert relay.stop() == 0
    drain_consumer(worker_objects.consumer(settings), 40)
    assert_audit(settings)


def _seed_kinds(settings, kinds: list[str]) -> None:
    """Seed one outbox row per kind, in this order (outbox ids follow it)."""
    events = make_events(3 * len(kinds), users=20)
    by_kind = {kind: [e for e in events if e.kind == kind] for kind in set(kinds)}
    seed_outbox(settings.database_url, [by_kind[k].pop() for k in kinds], with_events=True)


def _pending_by_kind(db) -> dict[str, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT split_part(routing_key, '.', 3), count(*) FROM outbox"
            " WHERE published_at IS NULL GROUP BY 1"
        )
        pending = dict(cur.fetchall())
    db.commit()
    return pending


def test_refused_rows_at_the_head_do_not_hold_back_the_rows_behind_them(
    settings, db, amqp_channel, worker_objects
):
    # Four batches the broker cannot route at the head: more than a relay ever holds (one
    # batch in flight, two claimed ahead), so only retry_at lets the views behind them pass.
    settings = dataclasses.replace(
        settings, relay_batch_size=10, relay_retry_base_s=60.0, relay_retry_max_s=120.0
    )
    relay, topo = _relay_without_binding(settings, amqp_channel, worker_objects)
    amqp_channel.queue_bind(topo.queue, topo.exchange, "interaction.recorded.view")
    _seed_kinds(settings, ["click"] * 40 + ["view"] * 10)
    for _ in range(20):  # bounded: the runner's loop without its sleeps
        try:
            relay.run_once()
        except PublishRefused as exc:
            relay.reset(exc)
        if "view" not in _pending_by_kind(db):
            break
    assert _pending_by_kind(db) == {"click": 40}
    with db.cursor() as cur:
        cur.execute(
            "SELECT min(attempts), bool_and(retry_at > now() + interval '20 seconds'),"
            " bool_and(last_error LIKE 'unroutable%%') FROM outbox WHERE published_at IS NULL"
        )
        assert cur.fetchone() == (1, True, True)  # each refused once, then left to wait
    db.commit()
    relay.flush()
    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    with db.cursor() as cur:  # the runbook's "retry them now"
        cur.execute("UPDATE outbox SET retry_at = NULL WHERE published_at IS NULL")
    db.commit()
    relay.probing = False
    for _ in range(20):
        relay.run_once()
        if not _pending_by_kind(db):
            break
    relay.flush()
    assert pending_rows(settings.database_url) == 0
    drain_consumer(worker_objects.consumer(settings), 50)
    assert_audit(settings)


def test_a_refused_row_waits_longer_after_each_attempt_up_to_the_cap(settings, db):
    from workers import outbox

    _seed_kinds(settings, ["view"] * 4)
    with db.cursor() as cur:
        cur.execute("SELECT id FROM outbox ORDER BY id")
        ids = [row_id for (row_id,) in cur.fetchall()]
        for row_id, attempts in zip(ids, (0, 1, 3, 20), strict=True):
            cur.execute("UPDATE outbox SET attempts = %s WHERE id = %s", (attempts, row_id))
    db.commit()
    with db.cursor() as cur:  # settle() spells out COMMIT, as on the relay's connections
        outbox.settle(
            cur,
            [],
            dict.fromkeys(ids, "nacked by broker"),
            retry=outbox.RetryDelay(base_s=2.0, max_s=10.0),
        )
        cur.execute("SELECT attempts, EXTRACT(EPOCH FROM retry_at - clock_timestamp()) FROM outbox")
        waits = {attempts: float(wait) for attempts, wait in cur.fetchall()}
    db.commit()
    # The full wait is base * 2^(attempts before), capped; jitter keeps 50-100 % of it.
    for attempts, full in ((1, 2.0), (2, 4.0), (4, 10.0), (21, 10.0)):
        assert 0.5 * full - 1 < waits[attempts] <= full, (attempts, waits)
