"""A session-scoped local stack (PostgreSQL, RabbitMQ, API, relay, consumer) for system tiers."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import Stack


@contextlib.contextmanager
def private_stack(prefix: str = "reco-stack-", **options) -> Iterator[Stack]:
    """A disposable stack in its own folder: up on entry, stopped and deleted on exit."""
    # Readable by the postgres and rabbitmq users (pytest's own tmp dirs are root-only).
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # noqa: S103 - service users must traverse it
    instance = Stack(root / "stack", **options)
    try:
        instance.up(log=lambda _msg: None)
        yield instance
    finally:
        instance.down(log=lambda _msg: None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One disposable stack for the session, in test mode."""
    with private_stack(test_mode=True) as instance:
        yield instance


@pytest.fixture(scope="session")
def stack_url(stack: Stack) -> str:
    """Base URL of the stack's API."""
    return stack.state["components"]["api"]["url"]
