"""Session-scoped private PostgreSQL and RabbitMQ, and a fresh migrated database per test."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from harness.stack import PostgresServer, RabbitServer
from service.settings import Settings

TEMPLATE_DB = "reco_template"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a server listens, and its URL (private instance or external)."""

    host: str
    port: int
    url: str
    server: object | None = None


def _state_root() -> Path:
    # Readable by the postgres and rabbitmq users (pytest's own tmp dirs are root-only).
    root = Path(tempfile.mkdtemp(prefix="reco-test-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users must traverse it
    return root


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture
def stack_state_dir() -> Iterator[Path]:
    """A state directory for a whole `reco-harness` stack; whatever it started is stopped."""
    from harness.stack import Stack

    root = Path(tempfile.mkdtemp(prefix="reco-stack-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users must traverse it
    yield root
    Stack(root).down(log=lambda _m: None)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    """A private folder for this test session's servers, removed at the end."""
    root = _state_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_instance(state_root: Path) -> Iterator[Endpoint]:
    """A private PostgreSQL for the session, or the one in RECO_DATABASE_URL."""
    external = os.environ.get("RECO_DATABASE_URL")
    if external:
        parts = urlsplit(external)
        yield Endpoint(
            parts.hostname or "127.0.0.1", parts.port or 5432, _with_db(external, "postgres")
        )
        return
    server = PostgresServer(state_root / "pg", test_mode=True)
    server.start()
    try:
        yield Endpoint(server.host, server.port, server.url(), server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbit_instance(state_root: Path) -> Iterator[Endpoint]:
    """A private RabbitMQ node for the session, or the one in RECO_AMQP_URL."""
    external = os.environ.get("RECO_AMQP_URL")
    if external:
        parts = urlsplit(external)
        yield Endpoint(parts.hostname or "127.0.0.1", parts.port or 5672, external)
        return
    server = RabbitServer(state_root / "rmq")
    server.start()
    try:
        yield Endpoint(server.host, server.port, server.url, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_instance: Endpoint) -> str:
    """A database migrated to head once per session, cloned by every test."""
    from migrations.runner import up

    conn = psycopg2.connect(pg_instance.url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        conn.close()
    url = _with_db(pg_instance.url, TEMPLATE_DB)
    up(url, log=lambda _m: None)
    return url


@contextlib.contextmanager
def cloned_database(pg_instance: Endpoint, prefix: str = "t") -> Iterator[str]:
    """Create a database from the migrated template, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
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


@pytest.fixture
def database_url(pg_instance: Endpoint, template_db: str) -> Iterator[str]:
    """A fresh migrated database for one test (a cheap copy of the template)."""
    with cloned_database(pg_instance) as url:
        yield url


@pytest.fixture
def amqp_namespace() -> str:
    """A unique prefix for this test's exchanges and queues."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(database_url: str, rabbit_instance: Endpoint, amqp_namespace: str) -> Settings:
    """Settings pointing at this test's database and namespace, in test mode."""
    return Settings.from_env(
        {
            "RECO_ENV": "test",
            "RECO_DATABASE_URL": database_url,
            "RECO_AMQP_URL": rabbit_instance.url,
            "RECO_AMQP_NAMESPACE": amqp_namespace,
        }
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to this test's database, for setup and assertions."""
    conn = psycopg2.connect(database_url, connect_timeout=5)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()
