"""A failed or interrupted `up` leaves nothing running that `down` does not know about."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.stack import identity, procs
from harness.stack import stack as stack_module
from harness.stack.procs import StackError
from harness.stack.stack import Stack

NEVER_READY = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch) -> Stack:
    """A stack whose apps never get ready (external dependencies, so none are started)."""
    monkeypatch.setenv("RECO_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/reco")
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    stack = Stack(tmp_path)
    stack.state["components"] = {}
    monkeypatch.setattr(stack, "app_argv", lambda name, port: NEVER_READY)
    return stack


def _saved(stack: Stack) -> dict:
    return json.loads(stack.state_path.read_text())["components"]


# Ctrl-C (or SIGTERM, which the CLI maps to it), and a readiness wait that gave up.
@pytest.mark.parametrize("failure", [KeyboardInterrupt, StackError("relay not ready")])
def test_an_app_is_on_record_before_its_wait_and_stopped_when_it_fails(stack, monkeypatch, failure):
    seen: dict = {}

    def interrupted(*_args, **_kwargs):
        seen.update(_saved(stack))  # what `down` would find if this process died here
        raise failure

    monkeypatch.setattr(stack_module, "wait_until", interrupted)
    with pytest.raises((KeyboardInterrupt, StackError)):
        stack.start_app("relay")
    relay = seen["relay"]
    assert relay["pid"] and relay["identity"] == _saved(stack)["relay"]["identity"]
    assert identity.identity(relay["pid"]) is None  # stopped before the interrupt went on


def test_an_app_that_never_gets_ready_is_stopped(stack, monkeypatch):
    monkeypatch.setattr(stack_module, "APP_READY_TIMEOUT", 0.5)
    with pytest.raises(StackError, match="relay not ready"):
        stack.start_app("relay")
    relay = _saved(stack)["relay"]
    assert identity.identity(relay["pid"]) is None
    assert [row["state"] for row in stack.status() if row["name"] == "relay"] == ["stopped"]


class _StartedRabbit:
    """A RabbitMQ node that starts at once (its record is what is checked)."""

    port, dist_port, epmd_port, pid, pgid = 5672, 25672, 4369, 4242, 4242
    url, nodename, log_path = "amqp://127.0.0.1:5672", "reco5672@localhost", Path("r.log")

    def start(self) -> None:
        """Pretend the node booted."""

    def running(self) -> bool:
        return True


def test_rabbitmq_is_on_record_when_postgres_fails_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RECO_DATABASE_URL", raising=False)
    monkeypatch.delenv("RECO_AMQP_URL", raising=False)

    def failing_postgres(_self) -> None:
        raise StackError("PostgreSQL did not start")

    monkeypatch.setattr(Stack, "_start_postgres", failing_postgres)
    monkeypatch.setattr(Stack, "rabbitmq", lambda _self: _StartedRabbit())
    with pytest.raises(StackError, match="PostgreSQL"):
        Stack(tmp_path).up(log=lambda _line: None)
    assert _saved(Stack(tmp_path))["rabbitmq"]["nodename"] == "reco5672@localhost"


def test_a_failed_start_signals_only_a_child_not_yet_reaped(monkeypatch) -> None:
    """Once poll() collected the child, its pid may be another process's: never signal it."""
    stopped: list[int] = []
    monkeypatch.setattr(procs, "stop_pid", lambda pid, timeout: stopped.append(pid))
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)  # reaped, as a readiness probe's poll() does
    with pytest.raises(RuntimeError), procs.stopped_on_failure(gone, ("RECO_X", "y")):
        raise RuntimeError("not ready")
    assert stopped == []
    alive = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeError), procs.stopped_on_failure(alive, ("RECO_X", "y")):
            raise RuntimeError("not ready")
        assert stopped == [alive.pid]
    finally:
        alive.kill()
        alive.wait(timeout=10)


def test_an_unreachable_external_database_is_a_one_line_error_and_exit_2(
    tmp_path, monkeypatch, capsys
):
    from harness.cli import main

    monkeypatch.setenv("RECO_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/reco")
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    assert main(["up", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RECO_DATABASE_URL unreachable: "), err
    assert "port 1 failed" in err[0]
