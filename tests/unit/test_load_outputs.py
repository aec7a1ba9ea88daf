"""Locust-free parts of the load profiles: outputs, run state and workload."""

from __future__ import annotations

import ast
import json
import os
import random
from pathlib import Path

import pytest

from loadtests import outputs, workload
from loadtests.runstate import RunState

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("status", "retry_after", "shed"),
    [(503, "1", True), (429, "Wed, 21 Oct 2026 07:28:00 GMT", True), (503, None, False),
     (429, "", False), (500, "1", False), (200, None, False)],
)  # fmt: skip
def test_only_a_refusal_with_retry_after_is_an_intended_shed(status, retry_after, shed):
    assert workload.is_shed(status, retry_after) is shed


def test_an_accepted_event_must_be_found_only_a_random_id_may_be_unknown():
    rng = random.Random(1)
    event_id, expected = workload.status_poll(rng, ["e-1", "e-2"])
    assert event_id in ("e-1", "e-2") and expected == (200,)
    event_id, expected = workload.status_poll(rng, [])
    assert len(event_id) == 36 and expected == (200, 404)


def test_a_history_starts_fresh_for_each_test_but_keeps_late_writes(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"op": "write", "from": "an earlier test"}\n')
    history = workload.History(path)
    history.record(op="write", n=1)
    history.close()
    history.record(op="write", n=2)  # a request that finished while the test stopped
    history.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_new_test_in_the_same_process_gets_a_new_history(tmp_path):
    state = RunState(run_dir=tmp_path)
    state.begin(shape=None)
    first = state.history()
    state.begin(shape=None)
    assert state.history() is not first


def test_this_runs_phases_win_and_an_earlier_runs_are_dropped(tmp_path):
    path = tmp_path / "phases.json"
    t0 = 1_800_000_000.0
    path.write_text(
        json.dumps(
            {
                "plateau": [t0 - 900, t0 - 300],  # an earlier test in this directory
                "all": [t0 - 1000, t0 - 300],
                "fault": [t0 + 10, t0 + 20],  # recorded for this run by another tool
            }
        )
    )
    ours = {"all": (t0, t0 + 60), "plateau": (t0 + 5, t0 + 60)}
    merged = outputs.merge_phases(path, ours, t0)
    assert merged == {
        "all": [t0, t0 + 60],
        "plateau": [t0 + 5, t0 + 60],
        "fault": [t0 + 10, t0 + 20],
    }


def test_no_successful_scrape_is_reported_as_a_harness_error():
    state = RunState(metrics_url="http://127.0.0.1:1/metrics")
    state.scrape_failures = 3
    message = outputs.scrape_error(state)
    assert message and "0 of 3 scrapes" in message
    assert outputs.scrape_error(RunState(metrics_url=None)) is None


def test_the_process_is_the_current_one_even_after_a_fork():
    state = RunState()
    assert state.process().pid == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a Locust worker is after --processes forks
        try:
            os.write(write, str(state.process().pid).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = int(os.read(read, 32).decode())
    os.close(read)
    os.waitpid(pid, 0)
    assert child == pid


def test_hooks_build_no_process_handle_at_import():
    """Locust imports the locustfile before --processes forks: a handle then is the master's."""
    tree = ast.parse((ROOT / "loadtests" / "hooks.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            calls = [n for n in ast.walk(node.value) if isinstance(n, ast.Call)]
            names = {ast.unparse(c.func) for c in calls}
            assert not any("Process" in name for name in names), ast.unparse(node)
