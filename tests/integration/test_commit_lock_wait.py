"""COMMIT behind a stalled commit: the outbox NOTIFY's instance-wide lock, held on purpose.

PostgreSQL takes one lock for the whole instance when a transaction that notified commits,
and holds it until the commit is durable. Here the holder's commit waits for a synchronous
standby that does not exist (only the holder asks for one: the test server runs with
``synchronous_commit=off``), which is a stalled WAL flush that lasts as long as the test wants.
Writes notify only while a relay is armed (idle, waiting for rows), so an armed listener
stands in for one; once it is busy again, writes no longer queue behind the stall.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import uuid
from collections.abc import Iterator

import orjson
import psycopg2
import psycopg2.extensions
import pytest

from harness.pytest_plugins.service import idem_key
from harness.stack import wait_until
from harness.stack.postgres import set_synchronous_standby
from service.app import create_app
from service.db import deadline
from workers.notify import OutboxListener

ABSENT_STANDBY = "reco_absent_standby"


def _connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    return conn


def _until(cur, sql: str, params=(), what: str = "") -> None:
    """Poll ``sql`` until its first column is true (5 s at most)."""

    def holds() -> bool:
        cur.execute(sql, params)
        row = cur.fetchone()
        return bool(row and row[0])

    wait_until(holds, 5, what or sql, interval=0.01)


@pytest.fixture
def absent_standby(pg_instance) -> Iterator[None]:
    """Commits that ask for synchronous replication wait until cancelled."""
    if pg_instance.server is None:
        pytest.skip("needs the private PostgreSQL (ALTER SYSTEM on an external one)")
    set_synchronous_standby(pg_instance.url, ABSENT_STANDBY)
    try:
        yield
    finally:
        set_synchronous_standby(pg_instance.url, None)


@pytest.fixture
def idle_relay(app_settings) -> Iterator[OutboxListener]:
    """A relay's listener, armed as while it waits for rows: writes NOTIFY."""
    listener = OutboxListener(app_settings)
    listener.ensure()
    assert listener.arm()
    yield listener
    listener.close()


@pytest.fixture
def stalled_commit(absent_standby, idle_relay, database_url, db) -> Iterator[callable]:
    """A transaction that notified and now stalls in COMMIT; call the result to release it."""
    holder = _connect(database_url)
    with holder.cursor() as cur:
        cur.execute("SET synchronous_commit = on")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def commit() -> None:
        with holder.cursor() as cur:
            cur.execute(
                "BEGIN; INSERT INTO outbox (event_id, event_type, routing_key, payload)"
                " VALUES (%s, 'test.stall', 'test.stall', '\\x00'); COMMIT",
                (str(uuid.uuid4()),),
            )

    committed = pool.submit(commit)
    with db.cursor() as cur:
        _until(cur, "SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = %s", (pid,))

    def release() -> None:
        with db.cursor() as cur:
            # Cancelling the wait ends it: the commit is already durable locally.
            cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
        committed.result(timeout=10)

    try:
        yield release
    finally:
        if not committed.done():
            release()
        pool.shutdown()
        holder.close()


def _post(client, auth, body, key: str):
    return client.post(
        "/v1/events",
        data=orjson.dumps(body),
        content_type="application/json",
        headers={**auth, "Idempotency-Key": key},
    )


def _written(db, event_id: str) -> tuple[int, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM events WHERE event_id = %s),"
            " (SELECT count(*) FROM outbox WHERE event_id = %s)",
            (event_id, event_id),
        )
        return cur.fetchone()


@pytest.fixture
def serving():
    """The wait callback the serving process installs (service/wsgi.py), removed afterwards."""
    deadline.install()
    yield
    psycopg2.extensions.set_wait_callback(None)


def test_a_stall_shorter_than_the_deadline_slows_the_write_instead_of_failing_it(
    app_settings, stalled_commit, auth, db, make_events, serving
):
    app = create_app(app_settings)
    body, key = make_events(1), idem_key()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(_post, app.test_client(), auth, body, key)
            with db.cursor() as cur:
                # The write's COMMIT queues behind the stalled one, past the lock timeout.
                _until(
                    cur,
                    "SELECT clock_timestamp() - query_start > %s * interval '2 ms'"
                    " FROM pg_stat_activity WHERE application_name = 'reco-api'"
                    " AND wait_event_type = 'Lock' AND query LIKE '%%COMMIT'",
                    (app_settings.lock_timeout_ms,),
                )
            stalled_commit()
            resp = answer.result(timeout=10)
    finally:
        app.extensions["reco"].db.pool.close()
    assert resp.status_code == 202, resp.json
    assert _written(db, body["events"][0]["event_id"]) == (1, 1)


def test_a_stall_longer_than_the_deadline_is_503_with_nothing_written(
    app_settings, stalled_commit, auth, db, make_events, serving
):
    # The server gives up waiting just before the client would: its error says the COMMIT
    # rolled back, so the answer is a definite 503 instead of 504 outcome-unknown.
    app = create_app(dataclasses.replace(app_settings, write_deadline_ms=700))
    body, key = make_events(1), idem_key()
    try:
        resp = _post(app.test_client(), auth, body, key)
        assert resp.status_code == 503, resp.json
        assert resp.json["type"] == "/problems/database-unavailable"
        assert resp.headers["Retry-After"]
        assert _written(db, body["events"][0]["event_id"]) == (0, 0)
        stalled_commit()
        # Nothing was stored under the key either: the retry runs fresh.
        retry = _post(app.test_client(), auth, body, key)
        assert retry.status_code == 202, retry.json
        assert "Idempotent-Replayed" not in retry.headers
    finally:
        app.extensions["reco"].db.pool.close()
    assert _written(db, body["events"][0]["event_id"]) == (1, 1)


def test_while_no_relay_waits_writes_do_not_queue_behind_a_stalled_commit(
    app_settings, stalled_commit, idle_relay, auth, db, make_events, serving
):
    # The relay got busy: writes skip the NOTIFY, so they need no instance-wide lock at COMMIT.
    idle_relay.disarm()
    app = create_app(dataclasses.replace(app_settings, write_deadline_ms=700))
    body = make_events(1)
    try:
        resp = _post(app.test_client(), auth, body, idem_key())
    finally:
        app.extensions["reco"].db.pool.close()
    assert resp.status_code == 202, resp.json
    assert _written(db, body["events"][0]["event_id"]) == (1, 1)
    stalled_commit()
