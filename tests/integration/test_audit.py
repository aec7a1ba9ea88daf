"""The shared invariant audit: it reconciles histories and catches each negative control."""

from __future__ import annotations

import dataclasses
import threading
import time
import types
import uuid

import psycopg2
import psycopg2.extensions

from harness import audit_state
from harness.audit import HELD_WAIT_S, audit, consumer_unacked, earlier
from harness.bench.workers import Publisher, make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import WorkerProcess, drain_consumer, drain_relay
from workers.messages import properties_for
from workers.topology import topology

amqp_channel = plugin.amqp_channel
worker_objects = plugin.worker_objects
worker_procs = plugin.worker_procs


def _seed(settings, n: int) -> list[str]:
    events = make_events(n, users=10)
    seed_outbox(settings.database_url, events, with_events=True)
    return [e.event_id for e in events]


def _audit(settings, **kwargs):
    return audit(
        settings.database_url,
        settings.amqp_url,
        settings.amqp_namespace,
        drain_timeout_s=kwargs.pop("drain_timeout_s", 20),
        settle_s=0.3,
        # No consumer here holds deliveries unless a test says so: a deliberate loss need not
        # be waited on for the full drain timeout.
        held_wait_s=kwargs.pop("held_wait_s", 2.0),
        **kwargs,
    )


def test_a_history_is_reconciled_into_lost_unexpected_and_recovered(settings, worker_objects):
    ids = _seed(settings, 10)
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 10)
    never_written = [str(uuid.uuid4()) for _ in range(3)]
    history = [
        {"event_ids": ids[:6], "outcome": "ok"},
        {"event_ids": [ids[6], ids[7], never_written[0]], "outcome": "info"},
        {"event_ids": [never_written[1]], "outcome": "fail"},
        {"event_ids": [never_written[2]], "outcome": "ok"},
    ]
    result = _audit(settings, history=history)
    assert result.drained and result.applied == 10
    assert result.lost == [never_written[2]]
    assert result.unexpected == sorted(ids[8:])
    assert result.recovered == sorted(ids[6:8]) and result.info_absent == 1
    assert result.duplicated_effects == 0 and not result.ok
    report = result.to_dict()
    assert report["lost_count"] == 1 and report["unexpected_count"] == 2
    assert report["ok"] is False and len(report["violations"]) == 2
    assert report["queue_ready"] == 0 and report["dlq_depth"] == 0


def test_negative_control_marking_before_confirms_is_caught_as_loss(
    settings, amqp_channel, worker_objects
):
    unsafe = dataclasses.replace(settings, unsafe_test_faults="relay_mark_before_confirm")
    relay = worker_objects.relay(unsafe)
    relay.run_once()
    topo = topology(settings)
    amqp_channel.queue_unbind(topo.queue, topo.exchange, topo.binding_key)
    ids = _seed(settings, 25)
    assert relay.run_once() == 25  # marked published right after publishing
    relay.flush()  # every message returned by the broker (unroutable) before the rebind
    assert (
        relay.metrics.registry.get_sample_value(
            "reco_relay_publish_failed_total", {"reason": "unroutable"}
        )
        == 25
    )
    amqp_channel.queue_bind(topo.queue, topo.exchange, topo.binding_key)
    result = _audit(settings, history=[{"event_ids": ids, "outcome": "ok"}])
    assert result.drained and result.outbox_pending == 0
    assert sorted(result.lost) == sorted(ids) and not result.ok


def test_negative_control_skipping_the_inbox_is_caught_as_duplicated_effects(
    settings, db, worker_objects
):
    _seed(settings, 20)
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, event_id::text, event_type, routing_key, payload, headers, created_at"
            " FROM outbox"
        )
        rows = cur.fetchall()
        cur.execute("UPDATE outbox SET published_at = clock_timestamp()")
    messages = [
        (key, bytes(payload), properties_for(row_id, event_id, etype, headers, created))
        for row_id, event_id, etype, key, payload, headers, created in rows
    ]
    publisher = Publisher(settings)
    try:
        publisher.publish(messages + messages)  # every event delivered twice
    finally:
        publisher.close()
    consumer = worker_objects.consumer(
        dataclasses.replace(settings, unsafe_test_faults="consumer_skip_inbox")
    )
    for _ in range(20):
        if consumer.run_once() == 0:
            consumer.wait(0.1)
    result = _audit(settings)
    assert result.popularity_effects == 40 and result.applied == 0
    assert result.duplicated_effects == 40 and len(result.lost) == 20 and not result.ok

    # The next run on the same stack is judged on what it adds, not on this damage.
    consumer.close()  # or it would keep taking deliveries it never applies
    before = earlier(settings.database_url, settings.amqp_url, settings.amqp_namespace)
    assert before.duplicated_effects == 40 and len(before.event_ids) == 20
    ids = _seed(settings, 10)
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 10)
    history = [{"event_ids": ids, "outcome": "ok"}]
    charged = _audit(settings, history=history)
    assert charged.duplicated_effects == 40 and len(charged.unexpected) == 20
    judged = _audit(settings, history=history, before=before)
    assert judged.duplicated_effects == 0 and judged.missing_effects == 0
    assert not judged.unexpected and not judged.lost and judged.ok, judged.violations()
    report = judged.to_dict()
    assert report["duplicated_effects_total"] == 40 and report["duplicated_effects"] == 0


def test_negative_control_acking_before_commit_is_caught_as_loss(
    settings, tmp_path, worker_objects, worker_procs
):
    ids = _seed(settings, 60)
    drain_relay(worker_objects.relay(settings))
    faults = "consumer_ack_before_commit,consumer_pause_before_commit"
    proc = WorkerProcess.start(
        "consumer", settings, tmp_path, env={"RECO_UNSAFE_TEST_FAULTS": faults}
    )
    worker_procs.append(proc)
    batch = proc.wait_for_log("test pause")["batch"]
    proc.kill()  # acked, never committed: the broker will not redeliver these
    drain_consumer(worker_objects.consumer(settings), 60 - batch)
    result = _audit(settings, history=[{"event_ids": ids, "outcome": "ok"}])
    assert len(result.lost) == batch > 0 and not result.ok


def test_an_undrained_pipeline_is_reported_within_the_drain_timeout(settings):
    _seed(settings, 5)  # no relay runs
    result = _audit(settings, drain_timeout_s=0.5)
    assert not result.drained and result.outbox_pending == 5
    assert result.drain_seconds < 5 and not result.ok
    assert any(v.startswith("not drained") for v in result.violations())


def test_every_committed_write_is_owed_its_effect_and_an_acknowledged_one_its_row(
    settings, db, worker_objects
):
    ids = _seed(settings, 6)
    with db.cursor() as cur:
        # Marked published but never queued, for a write its client was told failed (503).
        cur.execute(
            "UPDATE outbox SET published_at = clock_timestamp() WHERE event_id = %s", (ids[0],)
        )
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 5)
    with db.cursor() as cur:
        # Acknowledged with a 202 and applied, but its event row is gone: GET answers 404.
        cur.execute("DELETE FROM events WHERE event_id = %s", (ids[1],))
    history = [
        {"event_ids": ids[1:], "outcome": "ok"},
        {"event_ids": [ids[0]], "outcome": "fail"},
    ]
    result = _audit(settings, history=history)
    assert result.drained and result.lost == sorted(ids[:2]), result.violations()
    assert result.failed_but_applied == [ids[0]] and not result.ok
    assert any("failed writes were committed" in v for v in result.violations())


def test_a_batch_committed_while_the_stack_is_read_is_not_taken_for_a_broken_balance(
    settings, worker_objects, monkeypatch
):
    _seed(settings, 5)
    drain_relay(worker_objects.relay(settings))
    consumer = worker_objects.consumer(settings)
    fired: list[str] = []

    class Interleaved(psycopg2.extensions.cursor):
        """Let the real consumer commit its batch right after the audit read the inbox."""

        def execute(self, sql, params=None):
            super().execute(sql, params)
            if "FROM inbox" in sql and not fired:
                fired.append(sql)
                drain_consumer(consumer, 5)

    def connect(*args, **kwargs):
        return psycopg2.connect(*args, cursor_factory=Interleaved, **kwargs)

    monkeypatch.setattr(audit_state, "psycopg2", types.SimpleNamespace(connect=connect))
    before = earlier(settings.database_url, settings.amqp_url, settings.amqp_namespace)
    assert fired, "the consumer never committed between two reads"
    # Read statement by statement, the batch counted in the effects but not in the inbox:
    # the next run would be charged -5 duplicated and 5 missing effects.
    assert before.duplicated_effects == 0 and before.missing_effects == 0


def test_deliveries_a_consumer_holds_unacked_are_waited_for_not_called_lost(
    settings, tmp_path, worker_objects, worker_procs
):
    ids = _seed(settings, 20)
    drain_relay(worker_objects.relay(settings))
    # A consumer stuck before its commit (as in a backoff after a database failure) holds
    # every delivery unacked: the queue counts 0 ready, the inbox stops growing.
    proc = WorkerProcess.start(
        "consumer",
        settings,
        tmp_path,
        env={"RECO_UNSAFE_TEST_FAULTS": "consumer_pause_before_commit"},
    )
    worker_procs.append(proc)
    proc.wait_for_log("test pause")
    successor = worker_objects.consumer(settings)

    def resume() -> None:
        time.sleep(3)
        proc.kill()  # the broker requeues what it held; another consumer applies it
        drain_consumer(successor, 20)

    url = f"http://127.0.0.1:{proc.port}"
    assert consumer_unacked(url) == 20  # what it holds, as its gauge says
    thread = threading.Thread(target=resume)
    thread.start()
    try:
        result = _audit(
            settings,
            history=[{"event_ids": ids, "outcome": "ok"}],
            held_wait_s=HELD_WAIT_S,
            # Read 20 while it holds them, then nothing (killed): unknown, so waited for.
            unacked=lambda: consumer_unacked(url),
        )
    finally:
        thread.join(40)
    assert result.drained and not result.lost and result.ok, result.violations()
    assert result.drain_seconds >= 3


def test_a_consumer_holding_nothing_ends_the_wait_for_a_real_loss(
    settings, db, tmp_path, worker_objects, worker_procs
):
    ids = _seed(settings, 10)
    with db.cursor() as cur:  # marked published, never queued: the broker never had it
        cur.execute(
            "UPDATE outbox SET published_at = clock_timestamp() WHERE event_id = %s", (ids[0],)
        )
    drain_relay(worker_objects.relay(settings))
    proc = WorkerProcess.start("consumer", settings, tmp_path)
    worker_procs.append(proc)
    url = f"http://127.0.0.1:{proc.port}"
    started = time.monotonic()
    result = _audit(
        settings,
        history=[{"event_ids": ids, "outcome": "ok"}],
        held_wait_s=HELD_WAIT_S,
        unacked=lambda: consumer_unacked(url),
    )
    assert result.lost == [ids[0]] and not result.ok
    assert consumer_unacked(url) == 0
    # Reported once the consumer said for CLEAR_S that it holds nothing, not after HELD_WAIT_S.
    assert time.monotonic() - started < HELD_WAIT_S / 2


def test_a_smoke_checks_events_written_meanwhile_are_neither_phantoms_nor_exempt(
    settings, db, worker_objects
):
    ids = _seed(settings, 8)
    smoke = ids[:3]  # `reco-harness smoke --write` against the same stack during the run
    with db.cursor() as cur:
        cur.execute(
            "UPDATE events SET user_id = 'smoke-' || left(event_id::text, 8)"
            " WHERE event_id = ANY(%s::uuid[])",
            (smoke,),
        )
        # One of them marked published but never queued: it must still count as lost.
        cur.execute(
            "UPDATE outbox SET published_at = clock_timestamp() WHERE event_id = %s", (smoke[0],)
        )
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 7)
    result = _audit(settings, history=[{"event_ids": ids[3:], "outcome": "ok"}])
    assert result.unexpected == [], result.violations()
    assert result.lost == [smoke[0]] and not result.ok


def test_an_effect_applied_to_the_wrong_item_is_missing_though_the_totals_balance(
    settings, db, worker_objects
):
    ids = _seed(settings, 10)
    drain_relay(worker_objects.relay(settings))
    drain_consumer(worker_objects.consumer(settings), 10)
    history = [{"event_ids": ids, "outcome": "ok"}]
    before = earlier(settings.database_url, settings.amqp_url, settings.amqp_namespace)
    with db.cursor() as cur:
        cur.execute("SELECT item_id, kind FROM events WHERE event_id = %s", (ids[0],))
        item, kind = cur.fetchone()
        column = {"view": "views", "click": "clicks", "purchase": "purchases"}[kind]
        # A consumer bug that counts one event on its neighbour: every sum stays the same.
        cur.execute(
            f"UPDATE item_popularity SET {column} = {column} - 1 WHERE item_id = %s", (item,)
        )  # noqa: S608
        other = 4999 if item != 4999 else 4998
        cur.execute(
            f"UPDATE item_popularity SET {column} = {column} + 1 WHERE item_id = %s", (other,)
        )  # noqa: S608
    result = _audit(settings, history=history, before=before)
    assert result.duplicated_effects == 0 and result.missing_effects == 1, result.violations()
    assert result.misplaced_rows == [f"item_popularity {item} {column}"] and not result.ok
    assert any(f"item_popularity {item} {column}" in v for v in result.violations())
