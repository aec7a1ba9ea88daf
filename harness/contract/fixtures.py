"""Fixtures of the contract tier: one migrated database and one app per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.pytest_plugins.service import API_KEY, OTHER_API_KEY
from harness.pytest_plugins.services import cloned_database


@pytest.fixture(scope="module")
def contract_database_url(pg_instance, template_db: str) -> Iterator[str]:
    """A migrated database shared by one module (Hypothesis runs many cases per test)."""
    with cloned_database(pg_instance, prefix="c") as url:
        yield url


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
