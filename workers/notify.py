"""LISTEN outbox: wake the relay when rows commit (a hint only; the relay polls as well).

Writers NOTIFY only while a relay is armed (migrations/sql/0011_outbox_notify_gate.sql): a
relay about to sleep takes every stripe of the gate in share mode, then looks for claimable
rows once more, and gives the stripes back when it wakes. Busy or absent relays cost writers
nothing; NOTIFY would serialise their commits on one instance-wide lock.
"""

from __future__ import annotations

import select
import time

import psycopg2
import psycopg2.errors
from pika.adapters.select_connection import IOLoop

from service.db.connect import connect
from service.db.deadline import DeadlineExceeded
from service.settings import Settings
from workers import outbox

GATE_KEY = 1919247215  # advisory lock (GATE_KEY, stripe); the trigger in migration 0011 agrees
GATE_STRIPES = 64  # a writer takes stripe backend_pid % 64, so concurrent writers rarely meet
# Taking the stripes waits for writers that skipped their NOTIFY to commit; the check that
# follows is a statement of its own, so its snapshot sees their rows.
ARM = (
    f"SELECT count(pg_advisory_lock_shared({GATE_KEY}, stripe))"  # noqa: S608 - constants
    f" FROM generate_series(0, {GATE_STRIPES - 1}) AS stripe; {outbox.CLAIMABLE}"
)
DISARM = "SELECT pg_advisory_unlock_all()"


class OutboxListener:
    """An autocommit connection LISTENing on ``outbox``, watched by the AMQP ioloop if any."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn = None
        self.woken = False
        self.armed = False  # this session holds (some of) the gate's stripes
        self.silent = False  # a wait for the server ran out: the relay's next iteration fails
        self._watched: tuple[int, int] | None = None  # (id(ioloop), fd)
        self._ioloop: IOLoop | None = None

    def ensure(self) -> None:
        """Connect and LISTEN unless already listening."""
        if self.conn is not None and not self.conn.closed:
            return
        conn = connect(self.settings, "relay")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("LISTEN outbox")
        self.conn = conn
        self._watched = None

    def arm(self) -> bool:
        """Have writers NOTIFY from now on; True if no row is claimable, so sleeping is safe.

        Without a listening connection, or when a writer's commit holds a stripe past the lock
        timeout (a stalled commit), True as well: the relay sleeps one poll interval, the
        safety net. After any other error the connection is dropped and False says look again.
        """
        if self.conn is None or self.conn.closed:
            return True
        self.armed = True  # stripes taken before an error stay held until disarm()
        try:
            with self.conn.cursor() as cur:
                cur.execute(ARM)
                (claimable,) = cur.fetchone()
        except psycopg2.errors.LockNotAvailable:
            return True
        except psycopg2.Error as exc:
            self.close()
            self.silent = isinstance(exc, DeadlineExceeded)
            return False
        # Rows behind notifications that came with the answer were committed before the check.
        self.conn.notifies.clear()
        return not claimable

    def disarm(self) -> None:
        """Give the gate back: writers stop notifying while this relay is busy."""
        if not self.armed:
            return
        self.armed = False
        if self.conn is None or self.conn.closed:
            return  # the session ended, and its locks with it
        try:
            with self.conn.cursor() as cur:
                cur.execute(DISARM)
        except psycopg2.Error as exc:
            self.close()
            self.silent = isinstance(exc, DeadlineExceeded)

    def watch(self, ioloop: IOLoop) -> None:
        """Have ``ioloop`` drain notifications as they arrive (they set ``woken``)."""
        if self.conn is None or self.conn.closed:
            return
        key = (id(ioloop), self.conn.fileno())
        if self._watched != key:
            self.unwatch()
            ioloop.add_handler(key[1], lambda _fd, _events: self.drain(), IOLoop.READ)
            self._watched, self._ioloop = key, ioloop

    def unwatch(self) -> None:
        """Stop the ioloop watching the socket (before it closes or the loop changes)."""
        if self._watched is not None and self._ioloop is not None:
            try:
                self._ioloop.remove_handler(self._watched[1])
            except Exception:  # noqa: BLE001, S110 - the loop or the fd may already be gone
                pass
        self._watched, self._ioloop = None, None

    def drain(self) -> None:
        """Consume pending notifications; a broken connection is dropped (and wakes us)."""
        self.woken = True
        if self.conn is None:
            return
        try:
            self.conn.poll()
            self.conn.notifies.clear()
        except psycopg2.Error:
            self.close()

    def sleep(self, timeout: float) -> None:
        """Without an AMQP ioloop: block on the socket itself, or just sleep."""
        if self.conn is not None and not self.conn.closed:
            select.select([self.conn], [], [], timeout)
            self.drain()
        else:
            time.sleep(timeout)

    def close(self) -> None:
        self.unwatch()
        self.armed = False  # the session's advisory locks end with it
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass
