"""Apply feature batches on one background thread, so the next batch arrives meanwhile.

psycopg2 releases the GIL while PostgreSQL works, so the consumer's thread can receive and
decode the next deliveries (pika) while the previous batch is applied and committed. One
job at a time: the connection is touched only by the running job or, when idle, by the
consumer's thread.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import psycopg2

from service.db.connect import connect
from service.db.deadline import DeadlineExceeded
from service.settings import Settings
from workers import features
from workers.testhooks import pause_point


class Applier:
    """Own the consumer's database connection and run apply-and-commit jobs on it."""

    def __init__(self, settings: Settings, consumer_name: str):
        self.settings = settings
        self.consumer_name = consumer_name
        self.conn = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apply")
        self._job: concurrent.futures.Future | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def ensure(self) -> None:
        """Connect and prepare the batch statement unless a usable connection exists."""
        if self.conn is not None and not self.conn.closed:
            return
        conn = connect(self.settings, "consumer")
        try:
            with conn.cursor() as cur:
                features.prepare(cur)
            conn.commit()
        except BaseException:
            _close_quietly(conn)
            raise
        self.conn = conn

    def submit(self, events: list[features.Interaction]) -> concurrent.futures.Future:
        """Start applying ``events`` in one transaction; the future yields the fresh ids."""
        if self.busy:
            raise RuntimeError("a batch is already being applied")
        self._job = self._executor.submit(self._apply, events)
        return self._job

    def apply_now(self, events: list[features.Interaction]) -> set:
        """Apply and commit ``events`` on the calling thread (no job may be running)."""
        return self._apply(events)

    def _apply(self, events: list[features.Interaction]) -> set:
        conn = self.conn
        if conn is None or conn.closed:
            raise psycopg2.InterfaceError("consumer database connection is closed")
        try:
            with conn.cursor() as cur:
                fresh = features.apply_batch(
                    cur,
                    self.consumer_name,
                    events,
                    skip_inbox=self.settings.test_fault("consumer_skip_inbox"),
                )
            pause_point(self.settings, "consumer_pause_before_commit", batch=len(events))
            conn.commit()
        except DeadlineExceeded:
            raise  # a silent server: a rollback would wait out the deadline; it is dropped
        except BaseException:
            _rollback_quietly(conn)
            raise
        return fresh

    def wait_idle(self) -> None:
        """Wait for the running job to end, whatever its outcome (bounded by DB timeouts)."""
        job = self._job
        if job is not None:
            concurrent.futures.wait([job])

    def drop_connection(self) -> None:
        """Close the connection after a failure; ensure() reconnects."""
        self.wait_idle()
        if self.conn is not None:
            _close_quietly(self.conn)
            self.conn = None

    def close(self) -> None:
        """Wait for the running job, close the connection, stop the thread."""
        self.drop_connection()
        self._executor.shutdown(wait=True)


def _rollback_quietly(conn) -> None:
    _quietly(conn.rollback)


def _close_quietly(conn) -> None:
    _quietly(conn.close)


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except (psycopg2.Error, OSError):
        pass
