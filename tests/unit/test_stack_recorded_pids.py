"""A recorded pid is signalled only while it is still the stack's process, a group once vouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.stack import identity, procs
from harness.stack import stack as stack_module
from harness.stack.postgres import PostgresServer
from harness.stack.procs import StackError
from harness.stack.rabbitmq import RabbitServer
from harness.stack.stack import Stack


@pytest.fixture
def stranger():
    """An unrelated process group (`sh -c 'sleep 300 & sleep 300'` in its own session)."""
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [proc.pid, *_children(proc.pid)]
    assert len(pids) == 3
    yield proc.pid, pids
    os.killpg(proc.pid, signal.SIGKILL)  # ours: its leader is our unreaped child
    proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if identity.identity(pid)]


def test_an_identity_names_one_process_and_ends_with_it(tmp_path):
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "c.log")
    recorded = identity.identity(proc.pid)
    assert recorded and recorded.startswith(identity.boot_id() + ":")
    assert identity.is_ours(proc.pid, recorded)
    assert not identity.is_ours(proc.pid, identity.boot_id() + ":1")  # another start time
    assert not identity.is_ours(proc.pid, "another-boot:" + recorded.split(":")[1])
    assert not identity.is_ours(proc.pid, None)
    assert procs.stop_pid(proc.pid, timeout=10)
    assert identity.identity(proc.pid) is None and not identity.is_ours(proc.pid, recorded)


def test_a_pid_now_owned_by_another_process_is_left_alone(stranger):
    pid, pids = stranger
    recorded = identity.boot_id() + ":1"  # what the pid's earlier owner was
    assert not procs.stop_process(pid, recorded, timeout=1)
    assert not procs.stop_process(pid, None, timeout=1)
    assert _alive(pids) == pids


def test_a_group_is_killed_only_once_a_member_carries_its_marker(stranger, tmp_path):
    pid, pids = stranger
    procs.kill_group(pid, ("RECO_TEST_SPAWN", "group"))
    time.sleep(0.2)
    assert _alive(pids) == pids

    marked = procs.spawn(
        ["sh", "-c", "sleep 300 & sleep 300"],
        tmp_path / "m.log",
        env={**os.environ, "RECO_TEST_SPAWN": "group"},
    )
    deadline = time.monotonic() + 10
    while len(_children(marked.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    members = [marked.pid, *_children(marked.pid)]
    procs.kill_group(marked.pid, ("RECO_TEST_SPAWN", "group"))
    deadline = time.monotonic() + 10
    while _alive(members) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(members) == [] and marked.returncode is not None
    assert _alive(pids) == pids


def test_a_marked_group_is_killed_after_its_leader_is_gone(tmp_path):
    # The orphans of a killed master (gunicorn workers) keep the group and the marker.
    leader = procs.spawn(
        ["sh", "-c", "sleep 300 & echo $! > orphan.pid; exit 0"],
        tmp_path / "o.log",
        env={**os.environ, "RECO_TEST_SPAWN": "orphans"},
        cwd=tmp_path,
    )
    leader.wait(timeout=10)
    orphan = int((tmp_path / "orphan.pid").read_text())
    assert identity.identity(orphan)
    procs.kill_group(leader.pid, ("RECO_TEST_SPAWN", "orphans"))
    deadline = time.monotonic() + 10
    while identity.identity(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert identity.identity(orphan) is None


def test_a_process_we_may_not_signal_is_not_ours(tmp_path, monkeypatch):
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "c.log")
    recorded = identity.identity(proc.pid)

    def refused(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(signal, "pidfd_send_signal", refused)
    monkeypatch.setattr(os, "kill", refused)
    try:
        assert not procs.stop_process(proc.pid, recorded, timeout=1)
    finally:
        monkeypatch.undo()
        procs.stop_pid(proc.pid, timeout=10)
    assert proc.returncode is not None


def test_marked_processes_are_found_with_their_identities(tmp_path):
    # A value of this test's own: another run of the suite on the machine marks its own child.
    marker = f"find-me-{uuid.uuid4().hex}"
    proc = procs.spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        tmp_path / "c.log",
        env={**os.environ, "RECO_TEST_SPAWN": marker},
    )
    try:
        assert identity.marked("RECO_TEST_SPAWN", marker) == [
            (proc.pid, identity.identity(proc.pid))
        ]
        assert identity.vouched(proc.pid, "RECO_TEST_SPAWN", "someone-else") is None
    finally:
        procs.stop_pid(proc.pid, timeout=10)
    assert identity.marked("RECO_TEST_SPAWN", marker) == []


def _stack_with(tmp_path: Path, relay: dict) -> Stack:
    relay.update(port=1, url="http://127.0.0.1:1")
    (tmp_path / "stack.json").write_text(json.dumps({"components": {"relay": relay}}))
    return Stack(tmp_path)


class Spawned(Exception):
    """Raised instead of starting a process."""


def test_a_reused_relay_pid_is_reported_stopped_and_left_running(tmp_path, stranger):
    pid, pids = stranger
    relay = {"pid": pid, "pgid": pid, "identity": f"{identity.boot_id()}:1"}
    stack = _stack_with(tmp_path, relay)
    assert [row["state"] for row in stack.status()] == ["stopped"]
    assert stack.stale() == ["relay"]
    lines: list[str] = []
    stack.down(log=lines.append)
    time.sleep(0.2)
    assert _alive(pids) == pids


def test_a_pid_recorded_without_identity_is_reported_and_never_signalled(tmp_path, stranger):
    pid, pids = stranger
    stack = _stack_with(tmp_path, {"pid": pid, "pgid": pid})
    (row,) = stack.status()
    assert row["state"] == "unverified" and f"pid {pid}" in row["note"]
    lines: list[str] = []
    stack.down(log=lines.append)
    time.sleep(0.2)
    assert _alive(pids) == pids
    assert len(lines) == 1 and "left alone" in lines[0] and f"pid {pid}" in lines[0]
    assert stack.state["components"] == {}


def test_up_starts_an_app_whose_recorded_pid_was_reused(tmp_path, stranger, monkeypatch):
    pid, pids = stranger
    monkeypatch.setenv("RECO_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/reco")
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    relay = {"pid": pid, "pgid": pid, "identity": f"{identity.boot_id()}:1"}
    stack = _stack_with(tmp_path, relay)
    monkeypatch.setattr(stack_module, "port_free", lambda port: True)

    def spawn(*_args, **_kwargs):
        raise Spawned

    monkeypatch.setattr(stack_module, "spawn", spawn)
    with pytest.raises(Spawned):
        stack.start_app("relay")
    assert _alive(pids) == pids


def test_a_stale_postmaster_pid_is_never_signalled(tmp_path, stranger):
    pid, pids = stranger
    server = PostgresServer(tmp_path, port=1)
    server.data_dir.mkdir()
    (server.data_dir / "postmaster.pid").write_text(f"{pid}\n{server.data_dir}\n0\n1\n")
    server.stop(timeout=1)
    time.sleep(0.2)
    assert _alive(pids) == pids
    assert server.liveness() == "unverified"  # no identity kept: nothing to vouch for it
    server.identity_path.write_text(f"{pid} {identity.boot_id()}:1\n")
    server.stop(timeout=1)
    time.sleep(0.2)
    assert _alive(pids) == pids
    assert server.liveness() == "gone"  # the postmaster recorded is gone; its pid was reused


def test_a_stale_rabbitmq_pid_file_is_never_signalled(tmp_path, stranger):
    pid, pids = stranger
    server = RabbitServer(tmp_path, port=1, dist_port=2, epmd_port=3)
    server.base.mkdir()
    server.pid_file.write_text(f"{pid}\n")
    server.stop(timeout=1)
    time.sleep(0.2)
    assert _alive(pids) == pids
    assert not server.running()


def test_starting_over_an_unvouched_postmaster_says_what_to_do(tmp_path, stranger):
    pid, pids = stranger
    server = PostgresServer(tmp_path, port=1)
    server.data_dir.mkdir()
    (server.data_dir / "PG_VERSION").write_text("15\n")  # an initialised cluster
    (server.data_dir / "postmaster.pid").write_text(f"{pid}\n{server.data_dir}\n0\n1\n")
    with pytest.raises(StackError, match=f"already runs on {server.data_dir}.*pg_ctl -D"):
        server.start()
    assert _alive(pids) == pids
