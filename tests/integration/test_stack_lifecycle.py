"""The local stack as real processes: up within 20 s, truthful status, stale state, clean down."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest

from harness.cli import main
from harness.stack import PostgresServer, Stack, StackError
from harness.stack.identity import pids_with_env
from harness.stack.procs import pid_alive


@pytest.fixture
def state_dir(stack_state_dir: Path) -> Path:
    return stack_state_dir


def _tree(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def _status(state_dir: Path, capsys) -> tuple[int, dict]:
    code = main(["status", "--json", "--state-dir", str(state_dir)])
    data = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in data["components"]}


def test_up_status_down_leaves_nothing_behind(state_dir, capsys):
    started = time.monotonic()
    assert main(["up", "--state-dir", str(state_dir)]) == 0
    assert time.monotonic() - started < 60  # dependencies alone take < 20 s (printed by up)
    out = capsys.readouterr().out
    deps_seconds = float(out.split("dependencies ready in ")[1].split("s")[0])
    assert deps_seconds < 20

    code, components = _status(state_dir, capsys)
    assert code == 0
    assert {n: c["state"] for n, c in components.items()} == dict.fromkeys(
        ("postgres", "rabbitmq", "api", "relay", "consumer"), "ready"
    )
    assert components["postgres"]["url"].startswith("postgresql://")
    assert components["api"]["port"] and components["api"]["pid"]

    stack = Stack(state_dir)
    pids: set[int] = set()
    for info in stack.state["components"].values():
        pids |= _tree(info["pid"])
    pids |= set(pids_with_env("RABBITMQ_NODENAME", stack.rabbitmq().nodename))
    assert len(pids) > 8

    # A component that died is reported as stopped, and status fails.
    os.kill(stack.state["components"]["relay"]["pid"], signal.SIGKILL)
    time.sleep(0.5)
    code, components = _status(state_dir, capsys)
    assert code == 1 and components["relay"]["state"] == "stopped"

    # `up` again notices the stale entry and restarts only what is gone.
    api_pid = stack.state["components"]["api"]["pid"]
    assert main(["up", "--state-dir", str(state_dir)]) == 0
    assert "stale state" in capsys.readouterr().out
    restarted = Stack(state_dir).state["components"]
    assert restarted["api"]["pid"] == api_pid and pid_alive(restarted["relay"]["pid"])
    pids |= _tree(restarted["relay"]["pid"])

    # A database migrated by another checkout is refused, with the way out in the message.
    conn = psycopg2.connect(Stack(state_dir).database_url(), connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1")
    conn.close()
    capsys.readouterr()
    assert main(["up", "--state-dir", str(state_dir)]) == 2
    assert "checksum drift" in (err := capsys.readouterr().err) and "down --purge" in err

    assert main(["down", "--state-dir", str(state_dir)]) == 0
    assert "stopped postgres" in capsys.readouterr().out
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    assert [p for p in pids if pid_alive(p)] == []
    code, components = _status(state_dir, capsys)
    assert components == {}


def test_status_of_an_empty_state_dir(state_dir, capsys):
    code, components = _status(state_dir, capsys)
    assert components == {} and code == 0


def test_a_postgres_that_never_gets_ready_is_stopped(state_dir, monkeypatch):
    server = PostgresServer(state_dir / "pg", test_mode=True)
    monkeypatch.setattr(server, "ready", lambda: False)
    with pytest.raises(StackError, match="PostgreSQL not ready"):
        server.start(timeout=3)
    assert not pid_alive(server.pid) and server.liveness() == "gone"
