"""Tiers spread over pytest-xdist workers: the timed ones stay serial, and duplicate node ids
stop the run instead of silently running one test of each."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from harness.pytest_plugins.distribution import pytest_xdist_node_collection_finished

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> dict[str, str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return {name.split(":", 1)[1]: ini[name]["commands"] for name in ini if ":" in name}


def test_tiers_that_wait_on_processes_use_workers_and_timed_tiers_stay_serial():
    commands = _commands()
    for env in ("integration", "contract", "e2e", "chaos", "load-smoke"):
        assert "{[xdist]" in commands[env], env
    # By file: the stack-backed Locust runs share a worker only with runs against stand-ins.
    assert "{[xdist]loadfile}" in commands["load-smoke"]
    # Three workers where the tests mostly wait on processes and stacks of their own.
    assert "{[xdist]waiting_loadfile}" in commands["integration"]
    assert "{[xdist]waiting_load}" in commands["chaos"]
    # Their numbers (rates, latencies, toxic timings) must not share the machine with another
    # test.
    for env in ("unit", "faultproxy", "report", "bench"):
        assert "[xdist]" not in commands[env] and " -n" not in commands[env], env


def test_duplicate_node_ids_stop_the_run_and_are_named():
    with pytest.raises(pytest.exit.Exception) as stopped:
        pytest_xdist_node_collection_finished(None, ["t.py::a", "t.py::b", "t.py::a"])
    assert "t.py::a" in str(stopped.value) and "t.py::b" not in str(stopped.value)
    assert stopped.value.returncode == pytest.ExitCode.USAGE_ERROR


def test_unique_node_ids_pass():
    pytest_xdist_node_collection_finished(None, ["t.py::a", "t.py::b"])


def test_the_guard_is_loaded_for_every_tier():
    assert '"harness.pytest_plugins.distribution"' in (ROOT / "tests" / "conftest.py").read_text()
