"""Open PostgreSQL connections with client-side and server-side timeouts set."""

from __future__ import annotations

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


def connect_kwargs(settings: Settings, role: str) -> dict[str, object]:
    """libpq keyword arguments: connect timeout, keepalives, tcp_user_timeout, role timeouts."""
    statement, lock, idle = ROLE_TIMEOUTS[role](settings)
    return {
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


def ensure_prepared(cur, name: str, prepare_sql: str) -> None:
    """Run ``prepare_sql`` (a PREPARE of ``name``) unless this connection already did."""
    prepared = getattr(cur.connection, "prepared", None)
    if prepared is None or name not in prepared:
        cur.execute(prepare_sql)
        if prepared is not None:
            prepared.add(name)


def connect(settings: Settings, role: str) -> psycopg2.extensions.connection:
    """Open one connection for ``role`` (api, relay, consumer, admin)."""
    return psycopg2.connect(connection_factory=Connection, **connect_kwargs(settings, role))
