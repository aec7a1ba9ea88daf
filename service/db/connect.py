"""Open PostgreSQL connections with client-side and server-side timeouts set."""

from __future__ import annotations

import os
from collections.abc import Mapping

import psycopg2
import psycopg2.extensions

from service.settings import Settings

ROLE_TIMEOUTS = {
    # role: (statement_timeout, lock_timeout, idle_in_transaction_session_timeout) getters
    "api": lambda s: (s.statement_timeout_ms, s.lock_timeout_ms, s.idle_in_tx_timeout_ms),
    # The relay sits idle in transaction while it waits for confirms: its idle timeout must
    # exceed the confirm timeout or the server would kill it mid-publish.
    "relay": lambda s: (
        max(s.statement_timeout_ms, 5000),
        s.lock_timeout_ms,
        max(s.relay_idle_in_tx_timeout_ms, int(s.relay_confirm_timeout_s * 1000) * 3),
    ),
    "consumer": lambda s: (max(s.statement_timeout_ms, 5000), s.lock_timeout_ms, 30_000),
    "admin": lambda s: (60_000, 10_000, 60_000),
}


# libpq's defaults (sslmode and gssencmode "prefer") ask the server for encryption first: one
# more round trip per connect, which doubles a reconnect when the database is slow to answer.
LOCAL_TRANSPORT = {"sslmode": ("PGSSLMODE", "disable"), "gssencmode": ("PGGSSENCMODE", "disable")}
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _loopback_transport(dsn: str, environ: Mapping[str, str]) -> dict[str, str]:
    """No encryption negotiation to a loopback or Unix-socket server unless the DSN asks for it.

    Encryption over loopback protects nothing. A mode set in the DSN or the environment
    (PGSSLMODE, PGGSSENCMODE) is always left to libpq.
    """
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return {}  # libpq reports a malformed DSN better when it connects
    # hostaddr, where given, is what libpq connects to; no host at all means a Unix socket.
    hosts = (
        params.get("hostaddr")
        or params.get("host")
        or environ.get("PGHOSTADDR")
        or environ.get("PGHOST")
        or ""
    ).split(",")
    if not all(h in LOOPBACK_HOSTS or h.startswith("/") or not h for h in hosts):
        return {}
    return {
        key: value
        for key, (variable, value) in LOCAL_TRANSPORT.items()
        if key not in params and not environ.get(variable)
    }


def connect_kwargs(
    settings: Settings, role: str, environ: Mapping[str, str] = os.environ
) -> dict[str, object]:
    """libpq keyword arguments: connect timeout, keepalives, tcp_user_timeout, role timeouts."""
    statement, lock, idle = ROLE_TIMEOUTS[role](settings)
    return {
        **_loopback_transport(settings.database_url, environ),
        "dsn": settings.database_url,
        "connect_timeout": max(2, settings.db_connect_timeout_s),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": settings.db_tcp_user_timeout_ms,
        "application_name": f"reco-{role}",
        "options": (
            f"-c statement_timeout={statement} -c lock_timeout={lock} "
            f"-c idle_in_transaction_session_timeout={idle}"
        ),
    }


class Connection(psycopg2.extensions.connection):
    """A connection that remembers which statements it has prepared."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


def with_prepare(cur, name: str, prepare_sql: str, sql: str, after: str = "") -> str:
    """``sql``, preceded by ``prepare_sql`` (the PREPARE of ``name``) on a connection without it.

    The PREPARE travels in the same round trip as the statement that first runs it: on a new
    connection to a slow server, a round trip of its own could cost a request its deadline.
    ``after`` is a leading part of ``sql`` that must come first (a BEGIN). The statement is
    recorded as prepared before it runs: a prepared statement outlives a transaction that
    fails after it, and a failure before it (a lost or cancelled connection) discards the
    connection, and the record with it.
    """
    prepared = getattr(cur.connection, "prepared", None)
    if prepared is not None and name in prepared:
        return sql
    if prepared is not None:
        prepared.add(name)
    assert sql.startswith(after), (sql, after)
    return f"{after}{prepare_sql.strip()};{sql[len(after) :]}"


def connect(settings: Settings, role: str) -> psycopg2.extensions.connection:
    """Open one connection for ``role`` (api, relay, consumer, admin)."""
    return psycopg2.connect(connection_factory=Connection, **connect_kwargs(settings, role))
