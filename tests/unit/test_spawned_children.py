"""Children spawn() started are stopped through their Popen, so none is left 'still running'."""

from __future__ import annotations

import os
import sys
import time
import warnings

from harness.stack import procs

MARKER = ("RECO_TEST_SPAWN", "sleeper")


def _sleeper(tmp_path):
    """A spawned child that would run for 30 s unless stopped."""
    return procs.spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        tmp_path / "c.log",
        env={**os.environ, MARKER[0]: MARKER[1]},
    )


def test_a_stopped_child_is_known_to_its_popen_and_released(tmp_path):
    proc = _sleeper(tmp_path)
    assert proc in procs._CHILDREN
    assert procs.stop_pid(proc.pid, timeout=10)
    # Reaped with os.waitpid alone, Popen would keep returncode None and warn when collected.
    assert proc.returncode is not None
    assert proc not in procs._CHILDREN
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        proc.__del__()


def test_a_child_still_running_stays_held(tmp_path):
    proc = _sleeper(tmp_path)
    try:
        procs._reap(proc.pid)
        assert proc in procs._CHILDREN and proc.returncode is None
    finally:
        procs.stop_pid(proc.pid, timeout=10)
    assert proc not in procs._CHILDREN


def test_a_child_that_died_unwatched_is_collected_when_stopped(tmp_path):
    proc = procs.spawn([sys.executable, "-c", "pass"], tmp_path / "c.log")
    deadline = time.monotonic() + 10
    while procs.pid_alive(proc.pid) and time.monotonic() < deadline:  # exits by itself: a zombie
        time.sleep(0.01)
    assert not procs.stop_pid(proc.pid)  # nothing left to stop, but still ours to collect
    assert proc.returncode == 0 and proc not in procs._CHILDREN


def test_killing_a_group_collects_its_leader(tmp_path):
    # As for RabbitMQ: the spawned leader (runuser) is stopped with its group, not by pid.
    proc = _sleeper(tmp_path)
    procs.kill_group(proc.pid, MARKER)
    assert proc.returncode is not None and proc not in procs._CHILDREN


def test_the_group_of_a_spawned_child_is_its_own_never_ours(tmp_path):
    proc = _sleeper(tmp_path)
    try:
        assert procs.spawned_group(proc.pid) == proc.pid  # start_new_session: it leads a group
        assert procs.spawned_group(os.getpid()) is None  # never a group we would kill ourselves
        assert procs.spawned_group(None) is None
    finally:
        procs.kill_group(proc.pid, MARKER)
