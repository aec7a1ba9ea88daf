"""Fixtures of the contract tier: one migrated database and one app per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from harness.pytest_plugins.service import API_KEY, OTHER_API_KEY
from harness.pytest_plugins.services import TEMPLATE_DB, _with_db


@pytest.fixture(scope="module")
def contract_database_url(pg_instance, template_db: str) -> Iterator[str]:
    """A migrated database shared by one module (Hypothesis runs many cases per test)."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg_instance.url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        yield _with_db(pg_instance.url, name)
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def contract_settings(database_url: str):
    """Test-mode settings with two API clients; the API never talks to RabbitMQ."""
    from service.settings import Settings

    return Settings.from_env(
        {
            "RECO_ENV": "test",
            "RECO_DATABASE_URL": database_url,
            "RECO_API_KEYS": f"dev:{API_KEY},other:{OTHER_API_KEY}",
            "RECO_LOG_LEVEL": "WARNING",
            "RECO_MAX_INFLIGHT": "64",
        }
    )


@pytest.fixture(scope="module")
def contract_app(contract_database_url: str):
    """The Flask app under contract test, module-scoped so Hypothesis examples share it."""
    from service.app import create_app

    app = create_app(contract_settings(contract_database_url))
    app.config["TESTING"] = True
    yield app
    app.extensions["reco"].db.pool.close()
