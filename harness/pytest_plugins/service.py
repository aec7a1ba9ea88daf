"""Fixtures for the Flask app in-process: app, client and API-key headers."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest

from service.app import create_app
from service.settings import Settings

API_KEY = "dev-key"
OTHER_API_KEY = "other-key-0123456789abcdef"


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """Settings for the in-process app: two API clients, a pool big enough for thread tests."""
    return dataclasses.replace(
        settings,
        api_keys=(
            ("dev", __import__("hashlib").sha256(API_KEY.encode()).hexdigest()),
            ("other", __import__("hashlib").sha256(OTHER_API_KEY.encode()).hexdigest()),
        ),
        db_pool_size=8,
        max_inflight=64,
    )


@pytest.fixture
def app(app_settings: Settings):
    """The Flask app wired to this test's database."""
    application = create_app(app_settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["reco"].db.pool.close()


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    """Headers authenticating as the 'dev' client."""
    return {"X-API-Key": API_KEY}


def event_batch(n: int = 1, user_id: str = "u-1", item_id: int = 7, kind: str = "click") -> dict:
    """A valid POST /v1/events body with fresh event ids."""
    return {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "user_id": user_id,
                "item_id": item_id + i,
                "kind": kind,
                "occurred_at": "2026-11-29T10:00:00Z",
            }
            for i in range(n)
        ]
    }


@pytest.fixture
def make_events() -> Callable[..., dict]:
    """Build a valid event batch with fresh event ids."""
    return event_batch


def idem_key() -> str:
    """A fresh quoted Idempotency-Key value."""
    return f'"{uuid.uuid4()}"'
