"""A port taken between choosing it and binding it: servers with ports of their own retry.

``free_port()`` asks the OS for a port and closes it; until the server binds it, any other
socket may get the same ephemeral port. Each test hands a server, as its first choice, a
port that a listening socket holds, and expects it to come up on a fresh one; a port the
caller named is never swapped.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import postgres, rabbitmq
from harness.stack.postgres import PostgresServer
from harness.stack.procs import StackError, free_port
from harness.stack.rabbitmq import RabbitServer


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="reco-ports-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users must traverse it
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _first_then_free(*first: int):
    queue = list(first)
    return lambda: queue.pop(0) if queue else free_port()


def test_postgres_moves_off_a_port_taken_before_it_bound(monkeypatch, state_dir, taken_port):
    monkeypatch.setattr(postgres, "free_port", _first_then_free(taken_port))
    server = PostgresServer(state_dir / "pg", test_mode=True)
    try:
        server.start()
        assert server.port != taken_port
        assert server.ready()
        assert "could not bind" in server.log_path.read_text()
    finally:
        server.stop()


def test_postgres_keeps_a_port_the_caller_named(state_dir, taken_port):
    server = PostgresServer(state_dir / "pg", port=taken_port, test_mode=True)
    with pytest.raises(StackError, match="could not bind"):
        server.start(timeout=10)
    assert server.port == taken_port


def test_rabbitmq_moves_off_a_distribution_port_taken_before_it_bound(
    monkeypatch, state_dir, taken_port
):
    # Order of choice in RabbitServer: AMQP port, distribution port, epmd port.
    monkeypatch.setattr(rabbitmq, "free_port", _first_then_free(free_port(), taken_port))
    server = RabbitServer(state_dir / "rmq")
    first_node = server.nodename
    try:
        server.start()
        assert server.dist_port != taken_port
        assert server.nodename != first_node  # the node name follows the AMQP port
        assert server.ready()
    finally:
        server.stop()
