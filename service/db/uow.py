"""Unit of work: one transaction that rolls back unless committed, connection always returned."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import psycopg2.extensions

from service.db.deadline import DeadlineExceeded, remaining
from service.db.pool import Pool

# How much sooner than the client's deadline the server gives up waiting for a lock at
# COMMIT: its error must arrive while the client still listens, or the answer is a 504.
COMMIT_LOCK_MARGIN_S = 0.1


class UnitOfWork:
    """Borrow a pooled connection for one transaction; ``commit()`` or it rolls back."""

    def __init__(
        self,
        pool: Pool,
        checkout_timeout_s: float,
        autocommit: bool = False,
        lock_timeout_ms: int = 0,
        on_wait: Callable[[float], None] | None = None,
    ):
        self._pool = pool
        self._timeout = checkout_timeout_s
        self._on_wait = on_wait
        self._lock_timeout_ms = lock_timeout_ms
        # Autocommit: a read is one statement, its own transaction, with no BEGIN or ROLLBACK
        # round trip; a write sends BEGIN in the same round trip as its first statement and
        # ends with commit(), so COMMIT is the only extra round trip.
        self._autocommit = autocommit
        self.conn: psycopg2.extensions.connection | None = None
        self.committing = False

    def __enter__(self) -> UnitOfWork:
        self.conn = self._pool.checkout(self._timeout, self._on_wait)
        if self._autocommit:
            self.conn.autocommit = True
        return self

    def cursor(self) -> psycopg2.extensions.cursor:
        assert self.conn is not None, "use UnitOfWork as a context manager"
        return self.conn.cursor()

    def commit(self, round_trip_s: float = 0.0) -> None:
        """Commit; while COMMIT is in flight, a failure leaves the outcome unknown.

        ``round_trip_s`` is what the last round trip took. With less time than that left,
        committing would likely outlive the deadline and leave the outcome unknown; giving
        up before COMMIT is sent keeps the answer definite (nothing was written).
        """
        assert self.conn is not None
        left = remaining()
        if round_trip_s and left < round_trip_s:
            raise DeadlineExceeded("too little time left to commit within the deadline")
        self.committing = True
        if self._autocommit:
            with self.conn.cursor() as cur:
                # Closes a transaction the caller opened with BEGIN, in one round trip.
                cur.execute(self._commit_sql(left, round_trip_s))
        else:
            self.conn.commit()
        self.committing = False

    def _commit_sql(self, left_s: float, round_trip_s: float) -> str:
        """COMMIT, waiting for locks for the rest of the deadline rather than the lock timeout.

        The outbox's NOTIFY (sent while a relay waits for rows) takes one lock for the whole
        instance at COMMIT and holds it through the commit's WAL flush: while one flush
        stalls, every notifying write queues behind it. Waiting for the rest of the deadline
        turns a short stall into slower writes instead of failed ones; if the server gives
        up, its error still arrives in time to say that nothing was committed (503, not 504).
        """
        margin = max(COMMIT_LOCK_MARGIN_S, 2 * round_trip_s)
        wait_ms = round(1000 * (left_s - margin))
        if wait_ms <= self._lock_timeout_ms:
            return "COMMIT"
        return f"SET LOCAL lock_timeout = {wait_ms}; COMMIT"

    def __exit__(self, exc_type, exc, tb) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        broken = isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
        if not conn.closed and not broken:
            try:
                if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    if self._autocommit:  # a transaction spelled out with BEGIN
                        with conn.cursor() as cur:
                            cur.execute("ROLLBACK")
                    else:
                        conn.rollback()
                if self._autocommit:
                    conn.autocommit = False
            except psycopg2.Error:
                broken = True
        self._pool.checkin(conn, discard=broken or bool(conn.closed))
