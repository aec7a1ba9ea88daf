"""The outbox relay against the private PostgreSQL and RabbitMQ: confirms, returns, kills."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import psycopg2
import pytest

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import (
    WorkerProcess,
    assert_audit,
    drain_consumer,
    drain_relay,
    pending_rows,
    wait_until,
)
from workers.amqp import AmqpError
from workers.topology import topology

# Fixtures of the workers plugin (until tests/conftest.py registers it for every module).
amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects
worker_procs = plugin.worker_procs


def _seed(settings, n: int) -> list[str]:
    events = make_events(n, users=50)
    seed_outbox(settings.database_url, events, with_events=True)
    return [e.event_id for e in events]


def _record_claims(monkeypatch) -> list[tuple[str, int]]:
    """Record each claim the relay makes: ("claim" or "settle+claim", the id it starts above)."""
    from workers import outbox

    claims: list[tuple[str, int]] = []
    claim, settle = outbox.claim, outbox.settle

    def recorded_claim(cur, limit, after=0):
        claims.append(("claim", after))
        return claim(cur, limit, after)

    def recorded_settle(cur, acked, failures, claim_limit=0, **kwargs):
        if claim_limit:
            claims.append(("settle+claim", kwargs.get("claim_after", 0)))
        return settle(cur, acked, failures, claim_limit, **kwargs)

    monkeypatch.setattr(outbox, "claim", recorded_claim)
    monkeypatch.setattr(outbox, "settle", recorded_settle)
    return claims


def _depth(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def _published(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        return cur.fetchone()[0]


def test_relay_publishes_confirmed_rows_and_marks_them(settings, db, amqp_channel, worker_objects):
    ids = _seed(settings, 120)
    relay = worker_objects.relay(dataclasses.replace(settings, relay_batch_size=50))
    assert drain_relay(relay) == 120
    with db.cursor() as cur:
        cur.execute("SELECT count(*), min(attempts), max(attempts) FROM outbox")
        assert cur.fetchone() == (120, 1, 1)
    topo = topology(settings)
    assert _depth(amqp_channel, topo.queue) == 120
    method, props, body = amqp_channel.basic_get(topo.queue, auto_ack=False)
    assert props.message_id in ids and props.delivery_mode == 2
    assert props.headers["created_at"] and props.headers["request_id"] == "bench"
    amqp_channel.basic_nack(method.delivery_tag, requeue=True)
    samples = relay.metrics.registry.get_sample_value
    assert samples("reco_relay_published_total") == 120
    assert samples("reco_relay_batch_size_count") == 3
    drain_consumer(worker_objects.consumer(settings), 120)
    assert_audit(settings)


def test_unroutable_rows_stay_pending_until_the_binding_is_back(
    settings, db, amqp_channel, worker_objects
):
    # Refused rows claimable again at once, so each flush below is one more attempt (their
    # retry_at is tested in test_workers_relay_refused.py).
    settings = dataclasses.replace(settings, relay_retry_base_s=0.0)
    relay = worker_objects.relay(settings)
    relay.run_once()  # connects and declares the topology
    topo = topology(settings)
    amqp_channel.queue_unbind(topo.queue, topo.exchange, topo.binding_key)
    _seed(settings, 40)
    for attempt in (1, 2):
        assert relay.run_once() == 40  # claimed and published; settled by the flush
        assert relay.flush() == 40
        assert _published(db) == 0
        with db.cursor() as cur:
            cur.execute("SELECT min(attempts), max(attempts), min(last_error) FROM outbox")
            low, high, error = cur.fetchone()
        assert (low, high) == (attempt, attempt) and error.startswith("unroutable: 312")
    failed = relay.metrics.registry.get_sample_value(
        "reco_relay_publish_failed_total", {"reason": "unroutable"}
    )
    assert failed == 80
    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    assert drain_relay(relay) == 40
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE last_error IS NOT NULL")
        assert cur.fetchone() == (0,)
    drain_consumer(worker_objects.consumer(settings), 40)
    assert_audit(settings)


def test_sigkill_after_broker_ack_before_commit_duplicates_only_at_the_broker(
    settings, db, amqp_channel, tmp_path, worker_objects, worker_procs
):
    _seed(settings, 150)
    relay = WorkerProcess.start(
        "relay", settings, tmp_path, env={"RECO_UNSAFE_TEST_FAULTS": "relay_pause_before_commit"}
    )
    worker_procs.append(relay)
    paused = relay.wait_for_log("test pause")
    assert paused["acked"] == paused["rows"] == 150
    relay.kill()
    assert _published(db) == 0
    topo = topology(settings)
    assert _depth(amqp_channel, topo.queue) == 150  # the broker took them all
    drain_relay(worker_objects.relay(settings))
    assert _depth(amqp_channel, topo.queue) == 300  # republished: duplicates at the broker
    consumer = worker_objects.consumer(settings)
    drain_consumer(consumer, 150)
    wait_until(lambda: _depth(amqp_channel, topo.queue) == 0, 10, "queue empty")
    drain_consumer(consumer, 150)
    assert consumer.metrics.registry.get_sample_value("reco_consumer_duplicates_total") == 150
    assert_audit(settings)


def test_sigkill_with_publishes_in_flight_marks_nothing_and_loses_nothing(
    settings, db, tmp_path, worker_objects, worker_procs
):
    _seed(settings, 150)
    relay = WorkerProcess.start(
        "relay", settings, tmp_path, env={"RECO_UNSAFE_TEST_FAULTS": "relay_pause_before_confirm"}
    )
    worker_procs.append(relay)
    relay.wait_for_log("test pause")
    relay.kill()
    assert _published(db) == 0
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 150)
    assert_audit(settings)


def test_sigkill_mid_drain_never_marks_a_row_the_broker_lacks(
    settings, db, amqp_channel, tmp_path, worker_objects, worker_procs
):
    _seed(settings, 20_000)
    relay = WorkerProcess.start("relay", settings, tmp_path, env={"RECO_RELAY_BATCH_SIZE": "100"})
    worker_procs.append(relay)
    wait_until(lambda: _published(db) >= 1000, 30, "a few batches published", interval=0.01)
    relay.kill()
    # Every row marked published had its confirm: the queue holds at least as many messages.
    assert _depth(amqp_channel, topology(settings).queue) >= _published(db)
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 20_000, timeout=60)
    assert_audit(settings)


def test_two_relays_publish_every_row_exactly_once(settings, db, tmp_path, worker_objects):
    small = dataclasses.replace(settings, relay_batch_size=50)
    relays = [WorkerProcess.start("relay", small, tmp_path) for _ in range(2)]
    try:
        _seed(settings, 4000)
        wait_until(lambda: pending_rows(settings.database_url) == 0, 30, "outbox drained")
        counts = [_metric(r.get("/metrics")[1], "reco_relay_published_total") for r in relays]
    finally:
        codes = [r.stop() for r in relays]
    assert codes == [0, 0]  # graceful SIGTERM
    assert sum(counts) == 4000 and min(counts) > 0, counts
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE attempts <> 1")
        assert cur.fetchone() == (0,)
    consumer = worker_objects.consumer(settings)
    drain_consumer(consumer, 4000)
    assert consumer.metrics.registry.get_sample_value("reco_consumer_duplicates_total") in (0, None)
    assert_audit(settings)


def test_notify_wakes_an_idle_relay_before_the_poll_interval(settings, db, worker_objects):
    relay = worker_objects.relay(dataclasses.replace(settings, relay_poll_interval_ms=10_000))
    assert relay.run_once() == 0
    inserted = threading.Event()

    def insert() -> None:
        seed_outbox(settings.database_url, make_events(1))
        inserted.set()

    timer = threading.Timer(0.2, insert)
    timer.start()
    started = time.monotonic()
    relay.wait(10.0)
    waited = time.monotonic() - started
    timer.join(10)
    assert inserted.is_set() and waited < 5.0
    assert drain_relay(relay) == 1
    drain_consumer(worker_objects.consumer(settings), 1)
    assert_audit(settings)


def test_a_row_committed_before_the_relay_armed_ends_its_wait_at_once(settings, db, worker_objects):
    relay = worker_objects.relay(dataclasses.replace(settings, relay_poll_interval_ms=10_000))
    assert relay.run_once() == 0  # the outbox is empty: the relay would go idle now
    _seed(settings, 3)  # no relay armed: committed without a NOTIFY
    started = time.monotonic()
    relay.wait(10.0)
    assert time.monotonic() - started < 5.0  # arming looked once more and found the rows
    assert not relay.listener.armed  # back to work: writers skip the NOTIFY again
    assert drain_relay(relay) == 3
    drain_consumer(worker_objects.consumer(settings), 3)
    assert_audit(settings)


def test_a_row_freed_below_the_claim_hint_is_published_within_eight_claims(
    settings, db, worker_objects, monkeypatch
):
    claims = _record_claims(monkeypatch)
    _seed(settings, 2_000)
    holder = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        with holder.cursor() as cur:  # another relay's batch, say, that it later gives back
            cur.execute("SELECT min(id) FROM outbox")
            first = cur.fetchone()[0]
            cur.execute("SELECT id FROM outbox WHERE id = %s FOR UPDATE", (first,))
        relay = worker_objects.relay(dataclasses.replace(settings, relay_batch_size=20))
        for _ in range(10):
            relay.run_once()
        starts = [after for _, after in claims]
        assert any(starts[1:]), starts  # full claims: the later ones started above the last
        holder.rollback()  # the row is claimable again, below where claims now start
        claims.clear()
        for _ in range(12):
            relay.run_once()
        starts = [after for _, after in claims]
        with db.cursor() as cur:
            cur.execute("SELECT published_at IS NOT NULL FROM outbox WHERE id = %s", (first,))
            assert cur.fetchone()[0], starts
        assert 0 in starts[:9], starts  # a claim from the start came round within eight
        assert pending_rows(settings.database_url) > 0  # and it came before the backlog ended
    finally:
        holder.close()
    assert drain_relay(relay) > 0
    drain_consumer(worker_objects.consumer(settings), 2_000)
    assert_audit(settings)


def test_retention_purges_only_old_published_rows(settings, db, worker_objects):
    _seed(settings, 10)
    relay = worker_objects.relay(settings)
    drain_relay(relay)
    _seed(settings, 3)  # unpublished rows are never purged, whatever their age
    with db.cursor() as cur:
        cur.execute("UPDATE outbox SET created_at = now() - interval '3 days'")
        cur.execute(
            "UPDATE outbox SET published_at = now() - interval '2 days' WHERE id IN "
            "(SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY id LIMIT 6)"
        )
    assert relay.purge() == 6
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(published_at) FROM outbox")
        assert cur.fetchone() == (7, 4)
    assert relay.metrics.registry.get_sample_value("reco_relay_purged_total") == 6
    drain_relay(relay)
    drain_consumer(worker_objects.consumer(settings), 13)
    assert_audit(settings)


def test_retention_purges_expired_idempotency_keys_only(settings, db, worker_objects):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO idempotency_keys"
            " (client_id, key, fingerprint, response_status, response_body, expires_at)"
            " SELECT 'c', 'k' || g, 'f', 202, '\\x', now() + CASE WHEN g <= 4"
            " THEN interval '-1 second' ELSE interval '1 hour' END"
            " FROM generate_series(1, 7) g"
        )
    db.commit()
    relay = worker_objects.relay(settings)
    relay.purge()
    with db.cursor() as cur:
        cur.execute("SELECT key FROM idempotency_keys ORDER BY key")
        assert [r[0] for r in cur.fetchall()] == ["k5", "k6", "k7"]
    purged = "reco_relay_idempotency_keys_purged_total"
    assert relay.metrics.registry.get_sample_value(purged) == 4


def test_relay_process_serves_health_and_metrics_and_stops_gracefully(
    settings, tmp_path, worker_procs, worker_objects
):
    relay = WorkerProcess.start("relay", settings, tmp_path)
    worker_procs.append(relay)
    _seed(settings, 25)
    wait_until(lambda: pending_rows(settings.database_url) == 0, 20, "outbox drained")
    status, body = relay.get("/healthz")
    assert status == 200 and '"status":"ok"' in body
    metrics = relay.get("/metrics")[1]
    assert _metric(metrics, "reco_relay_published_total") == 25
    assert "reco_outbox_oldest_unpublished_age_seconds" in metrics
    assert relay.get("/nope")[0] == 404
    assert relay.stop() == 0
    messages = [r.get("msg") for r in relay.log_records()]
    assert "worker started" in messages and messages[-1] == "worker stopped"
    drain_consumer(worker_objects.consumer(settings), 25)
    assert_audit(settings)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    pytest.fail(f"metric {name} not found")


def _claim_plan(db, planning: str) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of the relay's claim in a transaction that is rolled back."""
    from workers import outbox

    with db.cursor() as cur:
        cur.execute(f"BEGIN; {planning}")
        cur.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + outbox.CLAIM, {"limit": 200, "after": 0}
        )
        plan = cur.fetchone()[0][0]["Plan"]
        cur.execute("ROLLBACK")
    return plan


def _nodes(plan: dict) -> list[tuple[str, str | None]]:
    nodes, found = [plan], []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        found.append((node["Node Type"], node.get("Index Name")))
    return found


def test_the_claim_walks_the_index_in_id_order_and_skips_rows_marked_since_vacuum(settings, db):
    from workers import outbox

    # Few rows unpublished, thousands marked published since the last vacuum (their entries
    # are still in the partial index) and no statistics yet: a new outbox, or one whose
    # autovacuum has not come round.
    seed_outbox(settings.database_url, make_events(6_000), analyze=False)
    db.autocommit = True
    with db.cursor() as cur:  # (no index scan of the partial index after the mark)
        cur.execute(
            "UPDATE outbox SET retry_at = now() + interval '1 minute'"
            " WHERE id > (SELECT max(id) - 5 FROM outbox)"
        )
        cur.execute(
            "UPDATE outbox SET published_at = now() WHERE id <= (SELECT max(id) - 20 FROM outbox)"
        )
    # The planner's own choice here is a bitmap scan and a sort: it visits every heap page
    # the marked rows sit on, claim after claim.
    default = _claim_plan(db, "SELECT 1")
    assert ("Bitmap Index Scan", "outbox_unpublished_idx") in _nodes(default), _nodes(default)
    pages_marked = _claim_plan(db, "SELECT 1")["Shared Hit Blocks"]
    # The relay's claim walks the index in id order and marks the dead entries as it
    # passes, so the next claim reads the index and the rows it locks, little more.
    first = _claim_plan(db, outbox.CLAIM_PLANNING)
    assert ("Index Scan", "outbox_unpublished_idx") in _nodes(first), _nodes(first)
    assert not [kind for kind, _ in _nodes(first) if kind in ("Sort", "Seq Scan")]
    assert first["Actual Rows"] == 15  # 20 unpublished, 5 of them waiting for their retry
    again = _claim_plan(db, outbox.CLAIM_PLANNING)["Shared Hit Blocks"]
    assert again * 3 < pages_marked, (again, pages_marked)


def test_a_short_claim_is_not_followed_by_claims_that_can_find_nothing(
    settings, db, worker_objects, monkeypatch
):
    claims = _record_claims(monkeypatch)
    relay = worker_objects.relay(settings)
    relay.run_once()  # connects; the outbox is empty
    for burst in range(3):  # bursts smaller than a batch, as under moderate load
        _seed(settings, 7)
        relay.wait(5)  # idle, as the runner leaves it: arming finds the seeded rows
        claims.clear()
        handled = [relay.run_once()]
        while handled[-1] and len(handled) < 10:  # the runner's loop: until an idle iteration
            handled.append(relay.run_once())
        assert handled == [7, 7, 0], (burst, handled)
        # One claim takes the burst; the next iteration, with nothing in flight, looks once
        # more and finds nothing. Claiming ahead would have added three or four more.
        assert [kind for kind, _ in claims] == ["claim", "claim"], (burst, claims)
    assert pending_rows(settings.database_url) == 0


def _relay_sessions(db) -> list[tuple[int, str]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT pid, state FROM pg_stat_activity"
            " WHERE application_name = 'reco-relay' AND pid <> pg_backend_pid()"
        )
        rows = cur.fetchall()
    db.rollback()
    return rows


def test_a_relay_frozen_mid_transaction_loses_its_rows_to_another_and_recovers(
    settings, db, tmp_path, worker_objects, worker_procs
):
    """Scenario 15: SIGSTOP past the idle-in-transaction timeout, with a second relay running."""
    quick = dataclasses.replace(
        settings,
        relay_batch_size=100,
        relay_confirm_timeout_s=0.5,
        relay_idle_in_tx_timeout_ms=1500,
    )
    ids = _seed(settings, 6000)
    frozen = WorkerProcess.start("relay", quick, tmp_path)
    worker_procs.append(frozen)
    wait_until(lambda: _published(db) >= 300, 30, "the relay draining", interval=0.01)
    for _ in range(50):  # freeze it while it holds claimed rows (it nearly always does)
        os.kill(frozen.pid, signal.SIGSTOP)
        if any(state != "idle" for _, state in _relay_sessions(db)):
            break
        os.kill(frozen.pid, signal.SIGCONT)
        time.sleep(0.005)
    else:
        pytest.fail("the relay was never frozen inside a transaction")
    try:
        held = {pid for pid, state in _relay_sessions(db) if state != "idle"}
        # The server ends the frozen session once it sat idle in its transaction past 1.5 s,
        # releasing its row locks; meanwhile a second relay publishes everything else.
        other = worker_objects.relay(quick)
        drain_relay(other, timeout=30)
        assert pending_rows(settings.database_url) == 0
        assert held and not held & {pid for pid, _ in _relay_sessions(db)}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Thawed, its commit fails on the dead session: it reconnects and carries on.
    wait_until(frozen.healthy, 10, "the thawed relay healthy")
    seed_outbox(settings.database_url, extra := make_events(50, users=5), with_events=True)
    wait_until(lambda: pending_rows(settings.database_url) == 0, 30, "new rows published")
    assert frozen.stop() == 0
    drain_consumer(worker_objects.consumer(settings), len(ids) + len(extra), timeout=60)
    assert_audit(settings)  # duplicates at the broker only; every event applied once


def test_a_link_lost_between_iterations_fails_one_then_the_next_reconnects(
    settings, db, worker_objects
):
    """Reopening a lost link at once, on a flapping network, would never back off."""
    relay = worker_objects.relay(settings)
    seed_outbox(settings.database_url, make_events(10), with_events=True)
    drain_relay(relay)
    relay.link.close()  # as a heartbeat timeout or a proxy would, while the relay idled
    with pytest.raises(AmqpError, match="broker link lost") as lost:
        relay.run_once()
    relay.reset(lost.value)  # what the runner does before it backs off
    seed_outbox(settings.database_url, make_events(10), with_events=True)
    drain_relay(relay)
    assert relay.link.alive
