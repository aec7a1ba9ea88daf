"""The outbox NOTIFY gate: writers notify only while a relay is armed, and none is missed."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import select
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from harness.stack import wait_until
from workers import notify
from workers.notify import OutboxListener

INSERT = (
    "INSERT INTO outbox (event_id, event_type, routing_key, payload)"
    " VALUES (%s, 'test.gate', 'test.gate', '\\x00')"
)


def _connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture
def watcher(database_url) -> Iterator[psycopg2.extensions.connection]:
    """A plain LISTEN outbox session that sees every NOTIFY sent, gate or not."""
    conn = _connect(database_url)
    with conn.cursor() as cur:
        cur.execute("LISTEN outbox")
    yield conn
    conn.close()


@pytest.fixture
def listener(settings) -> Iterator[OutboxListener]:
    """The relay's listener, connected as the relay connects."""
    relay_listener = OutboxListener(settings)
    relay_listener.ensure()
    yield relay_listener
    relay_listener.close()


def _notified(conn, timeout: float = 0.0) -> int:
    """Notifications that reached ``conn`` (waiting up to ``timeout`` for the first)."""
    if not conn.notifies:
        select.select([conn], [], [], timeout)
        conn.poll()
    count = len(conn.notifies)
    conn.notifies.clear()
    return count


def _write(db) -> None:
    with db.cursor() as cur:
        cur.execute(INSERT, (str(uuid.uuid4()),))


def _advisory_locks(db, listener: OutboxListener) -> int:
    """Advisory locks the listener's session holds."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
            (listener.conn.get_backend_pid(),),
        )
        return cur.fetchone()[0]


def _clear_outbox(db) -> None:
    with db.cursor() as cur:
        cur.execute("DELETE FROM outbox")


def test_writes_notify_only_while_a_relay_is_armed(db, watcher, listener):
    _write(db)
    # A NOTIFY would have been delivered with the commit; the watcher's round trip after it
    # proves nothing is on the way.
    with watcher.cursor() as cur:
        cur.execute("SELECT 1")
    assert _notified(watcher) == 0
    assert listener.arm() is False  # the row just written is claimable: do not sleep
    _clear_outbox(db)
    listener.disarm()
    assert listener.arm() is True
    _write(db)
    assert _notified(watcher, timeout=5) == 1
    assert _notified(listener.conn, timeout=5) == 1
    listener.disarm()
    _write(db)
    with watcher.cursor() as cur:
        cur.execute("SELECT 1")
    assert _notified(watcher) == 0
    assert _advisory_locks(db, listener) == 0


def test_the_trigger_and_the_relay_name_the_same_gate(db):
    with db.cursor() as cur:
        cur.execute("SELECT prosrc FROM pg_proc WHERE proname = 'outbox_notify'")
        source = cur.fetchone()[0]
    assert f"pg_try_advisory_xact_lock({notify.GATE_KEY}, " in source
    assert f"pg_backend_pid() % {notify.GATE_STRIPES})" in source


def test_arming_waits_for_a_write_that_skipped_its_notify_and_then_sees_its_row(
    database_url, db, listener
):
    writer = _connect(database_url)
    try:
        with writer.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(INSERT, (str(uuid.uuid4()),))  # no relay armed: the NOTIFY is skipped
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            armed = pool.submit(listener.arm)
            with db.cursor() as cur:

                def arming_waits() -> bool:
                    cur.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (listener.conn.get_backend_pid(),),
                    )
                    row = cur.fetchone()
                    return bool(row and row[0])

                wait_until(arming_waits, 5, "the relay's arming to wait for the writer")
            assert not armed.done()
            with writer.cursor() as cur:
                cur.execute("COMMIT")
            # Its row committed after the relay's last claim and sent no NOTIFY: arming found it.
            assert armed.result(timeout=5) is False
    finally:
        writer.close()


def test_a_writer_holding_its_stripe_past_the_lock_timeout_leaves_the_relay_one_poll(
    settings, database_url, db
):
    listener = OutboxListener(dataclasses.replace(settings, lock_timeout_ms=100))
    listener.ensure()
    writer = _connect(database_url)
    try:
        with writer.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(INSERT, (str(uuid.uuid4()),))
        # A stalled commit holds its stripe: arming gives up at the lock timeout, and the relay
        # sleeps one poll interval, as it would without a listening connection.
        assert listener.arm() is True
        assert listener.armed
        listener.disarm()
        assert _advisory_locks(db, listener) == 0
    finally:
        writer.close()
        listener.close()
