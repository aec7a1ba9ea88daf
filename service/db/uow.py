"""Unit of work: one transaction that rolls back unless committed, connection always returned."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from service.db.deadline import DeadlineExceeded, remaining
from service.db.pool import Pool


class UnitOfWork:
    """Borrow a pooled connection for one transaction; ``commit()`` or it rolls back."""

    def __init__(self, pool: Pool, checkout_timeout_s: float, autocommit: bool = False):
        self._pool = pool
        self._timeout = checkout_timeout_s
        # Autocommit: a read is one statement, its own transaction, with no BEGIN or ROLLBACK
        # round trip; a write sends BEGIN in the same round trip as its first statement and
        # ends with commit(), so COMMIT is the only extra round trip.
        self._autocommit = autocommit
        self.conn: psycopg2.extensions.connection | None = None
        self.committing = False

    def __enter__(self) -> UnitOfWork:
        self.conn = self._pool.checkout(self._timeout)
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
        if round_trip_s and remaining() < round_trip_s:
            raise DeadlineExceeded("too little time left to commit within the deadline")
        self.committing = True
        if self._autocommit:
            with self.conn.cursor() as cur:
                cur.execute("COMMIT")  # closes a transaction the caller opened with BEGIN
        else:
            self.conn.commit()
        self.committing = False

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
