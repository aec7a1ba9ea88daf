"""A small thread-safe connection pool with a checkout timeout (psycopg2's has none)."""

from __future__ import annotations

import queue
import select
import threading
import time
from collections.abc import Callable

import psycopg2
import psycopg2.extensions


def _peer_spoke(conn: psycopg2.extensions.connection) -> bool:
    """Tell whether the server sent anything to an idle connection: it closed it, or said why.

    An idle connection gets nothing unasked (the service never LISTENs), so readable means
    end of file or a FATAL before it (a restart, a terminated backend, a proxy that dropped
    the link). One poll costs no round trip; handing the connection out would cost the
    request its answer.
    """
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError, psycopg2.Error):
        return True


class PoolTimeout(RuntimeError):
    """No connection became free within the checkout timeout."""


class Pool:
    """Hand out up to ``size`` connections; callers wait at most ``timeout_s`` for one."""

    def __init__(self, factory: Callable[[], psycopg2.extensions.connection], size: int):
        self._factory = factory
        self._idle: queue.LifoQueue[psycopg2.extensions.connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self.size = size

    def checkout(
        self, timeout_s: float, on_wait: Callable[[float], None] | None = None
    ) -> psycopg2.extensions.connection:
        """Return an open connection, creating one if no idle one is left.

        ``on_wait`` gets the seconds spent waiting for a free slot (not connecting).
        """
        started = time.perf_counter()
        if not self._slots.acquire(timeout=timeout_s):
            raise PoolTimeout(f"no database connection free within {timeout_s * 1000:.0f} ms")
        if on_wait is not None:
            on_wait(time.perf_counter() - started)
        try:
            while True:
                try:
                    conn = self._idle.get_nowait()
                except queue.Empty:
                    return self._factory()
                if not conn.closed and not _peer_spoke(conn):
                    return conn
                conn.close()
        except BaseException:
            self._slots.release()
            raise

    def checkin(self, conn: psycopg2.extensions.connection, discard: bool = False) -> None:
        """Give a connection back; broken or discarded ones are closed, not reused."""
        try:
            if (
                discard
                or conn.closed
                or conn.get_transaction_status()
                not in (psycopg2.extensions.TRANSACTION_STATUS_IDLE,)
            ):
                conn.close()
            else:
                self._idle.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
