"""A port taken between choosing it and binding it: servers with ports of their own retry.

``free_port()`` finds a port that binds and closes it; until the server binds it, any other
socket may take the same port. PostgreSQL and an app are handed, as their first choice, a
port that a listening socket holds, and must come up on a fresh one. RabbitMQ must report
such a clash within seconds; its retry decision is checked without a second boot. A port the
caller named is never swapped.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.stack import postgres, rabbitmq
from harness.stack import stack as stack_module
from harness.stack.identity import pids_with_env
from harness.stack.postgres import PostgresServer
from harness.stack.procs import StackError
from harness.stack.rabbitmq import RabbitServer
from harness.stack.stack import Stack

# An app that answers every GET with 200 on the port it is given (it fails as apps do when
# that port is taken: "Address already in use").
TINY_APP = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


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


def test_rabbitmq_fails_at_once_naming_a_taken_distribution_port(state_dir, taken_port):
    # The ports were named, so no retry: the boot failure must surface in seconds (not after
    # the readiness timeout) and carry the marker the retry keys on.
    server = RabbitServer(state_dir / "rmq", port=free_port(), dist_port=taken_port)
    started = time.monotonic()
    try:
        with pytest.raises(StackError) as failure:
            server.start(timeout=40)
        assert pids_with_env(*server.marker) == []  # the failed node stopped what it started
    finally:
        server.stop(timeout=10)
    assert time.monotonic() - started < 30
    assert any(marker in str(failure.value) for marker in rabbitmq.PORT_CLASH)


def test_rabbitmq_retries_on_fresh_ports_only_when_they_were_its_own(monkeypatch, state_dir):
    clash = StackError("RabbitMQ failed to boot\n{dist_port_already_used,4369,not_erlang}")
    for own, expected_calls in ((True, 2), (False, 1)):
        ports = {} if own else {"port": 1, "dist_port": 2, "epmd_port": 3}
        server = RabbitServer(state_dir / "rmq", **ports)
        calls = []

        def start_once(_timeout, calls=calls, server=server):
            calls.append(server.nodename)
            if len(calls) == 1:
                raise clash

        monkeypatch.setattr(server, "_start_once", start_once)
        monkeypatch.setattr(server, "stop", lambda timeout=0: None)
        if own:
            server.start()
            assert calls[0] != calls[1]  # a new AMQP port, so a new node name
        else:
            with pytest.raises(StackError):
                server.start()
        assert len(calls) == expected_calls


def test_an_app_moves_off_a_port_taken_before_it_bound(monkeypatch, state_dir, taken_port):
    monkeypatch.setenv("RECO_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/reco")
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    monkeypatch.setattr(stack_module, "free_port", _first_then_free(taken_port))
    stack = Stack(state_dir)
    stack.state["components"] = {}
    monkeypatch.setattr(
        stack, "app_argv", lambda _name, port: [sys.executable, "-c", TINY_APP, str(port)]
    )
    try:
        stack.start_app("relay")
        relay = stack.state["components"]["relay"]
        assert relay["port"] != taken_port
        assert [r["state"] for r in stack.status() if r["name"] == "relay"] == ["ready"]
        assert "Address already in use" in Path(relay["log"]).read_text()
    finally:
        stack.down(log=lambda _line: None)
