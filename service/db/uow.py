"""Unit of work: one transaction that rolls back unless committed, connection always returned."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from service.db.pool import Pool


class UnitOfWork:
    """Borrow a pooled connection for one transaction; ``commit()`` or it rolls back."""

    def __init__(self, pool: Pool, checkout_timeout_s: float, autocommit: bool = False):
        self._pool = pool
        self._timeout = checkout_timeout_s
        # Reads, and writes done in one statement, run in autocommit: each statement is its
        # own transaction, so neither BEGIN nor COMMIT nor ROLLBACK costs a round trip.
        self._autocommit = autocommit
        self.conn: psycopg2.extensions.connection | None = None
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        self.conn = self._pool.checkout(self._timeout)
        if self._autocommit:
            self.conn.autocommit = True
        return self

    def cursor(self) -> psycopg2.extensions.cursor:
        assert self.conn is not None, "use UnitOfWork as a context manager"
        return self.conn.cursor()

    def commit(self) -> None:
        assert self.conn is not None
        self.conn.commit()
        self._committed = True

    def __exit__(self, exc_type, exc, tb) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        broken = isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
        if self._autocommit and not conn.closed:
            try:
                conn.autocommit = False
            except psycopg2.Error:
                broken = True
        elif not self._committed and not conn.closed and not broken:
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
        self._pool.checkin(conn, discard=broken or bool(conn.closed))
