"""Readiness on a database the migrations have not reached yet."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from harness.pytest_plugins.services import cloned_database
from migrations.runner import up
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def empty_database_url(pg_instance, template_db: str) -> Iterator[str]:
    """A database with no tables at all, as before the first `migrate`."""
    with cloned_database(pg_instance, prefix="empty") as url:
        conn = psycopg2.connect(url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            conn.close()
        yield url


def test_an_unmigrated_database_is_migrations_pending_until_migrated(empty_database_url):
    """No schema_migrations table yet: 503 migrations-pending with Retry-After, then 200."""
    environ = {"RECO_ENV": "test", "RECO_DATABASE_URL": empty_database_url}
    app = create_app(Settings.from_env({**environ, "RECO_LOG_LEVEL": "WARNING"}))
    client = app.test_client()
    try:
        resp = client.get("/readyz")
        assert resp.status_code == 503, resp.get_json()
        assert resp.mimetype == "application/problem+json"
        assert resp.get_json()["type"] == "/problems/migrations-pending"
        assert "schema at version 0" in resp.get_json()["detail"]
        assert resp.headers["Retry-After"].isdigit()
        # The database answered: an unmigrated schema must not open the circuit breaker.
        assert app.extensions["reco"].db.breaker.state == "closed"
        assert client.get("/healthz").status_code == 200
        up(empty_database_url, log=lambda _m: None)
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["reco"].db.pool.close()
