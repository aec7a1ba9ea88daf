"""Client-side deadlines for every database call, enforced by a psycopg2 wait callback.

libpq's connect_timeout cannot go below 2 s and statement_timeout is enforced by the server,
so a black-holed connection (the server silent, TCP still acknowledged) would block a worker
until gunicorn kills it. Running psycopg2 in its asynchronous mode with a select()-based wait
bounds every connect and query by the current request's remaining budget.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

# Bound for database calls made outside any request scope (start-up, background probes).
DEFAULT_BUDGET_S = 5.0

_local = threading.local()
_default_budget_s = DEFAULT_BUDGET_S  # install() may raise it (the workers' longer statements)


class DeadlineExceeded(psycopg2.OperationalError):
    """The database did not answer within the request's remaining budget."""


def remaining() -> float:
    """Seconds left in the current scope (DEFAULT_BUDGET_S when none is active)."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return _default_budget_s
    return deadline - time.monotonic()


@contextmanager
def deadline_scope(seconds: float) -> Iterator[None]:
    """Bound every database wait inside the block to ``seconds`` in total."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def wait_with_deadline(conn: psycopg2.extensions.connection) -> None:
    """psycopg2 wait callback: poll the connection, never waiting past the deadline."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        budget = remaining()
        if budget <= 0:
            raise DeadlineExceeded("database deadline exceeded")
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([conn.fileno()], [], [], budget)[0]
        elif state == psycopg2.extensions.POLL_WRITE:
            ready = select.select([], [conn.fileno()], [], budget)[1]
        else:  # pragma: no cover - psycopg2 documents only the states above
            raise psycopg2.OperationalError(f"bad poll state {state}")
        if not ready:
            raise DeadlineExceeded("database deadline exceeded")


def install(default_budget_s: float = DEFAULT_BUDGET_S) -> None:
    """Make every psycopg2 connection in this process honour deadlines.

    Outside a scope, each wait for the server is bounded by ``default_budget_s``.
    """
    global _default_budget_s
    _default_budget_s = default_budget_s
    psycopg2.extensions.set_wait_callback(wait_with_deadline)
