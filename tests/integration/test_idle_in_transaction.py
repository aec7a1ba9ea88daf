"""A session left idle in a transaction is counted once it is older than the threshold."""

from __future__ import annotations

import psycopg2

from harness import server_health
from harness.pytest_plugins.workers import wait_until


def test_a_session_idle_in_a_transaction_is_counted(database_url) -> None:
    before = server_health.idle_in_transaction(database_url, older_than_s=0)
    idle = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with idle.cursor() as cur:
            cur.execute("SELECT 1")  # psycopg2 opened a transaction and leaves it open
        assert server_health.idle_in_transaction(database_url, older_than_s=0) == before + 1
        assert server_health.idle_in_transaction(database_url, older_than_s=3600) == 0
    finally:
        idle.close()
    # The server ends the backend after the client has gone: it leaves pg_stat_activity soon,
    # not at once.
    wait_until(
        lambda: server_health.idle_in_transaction(database_url, older_than_s=0) == before,
        10,
        "the closed session to leave pg_stat_activity",
    )
