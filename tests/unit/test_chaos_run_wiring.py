"""`chaos run` never trusts the stack's chaos flag alone: a bypassed proxy gets the apps rewired."""

from __future__ import annotations

import pytest

import chaos.runner
from harness.cli import main
from harness.commands import chaos as command


def _stack_class(marked_chaos: bool, bypassed: set[str], calls: list, proxy: bool = True):
    class _Stack:
        """A running stack; ``up(chaos=True)`` restarts the bypassing apps through proxies."""

        def __init__(self, state_dir, chaos=None):
            self.state_dir = state_dir
            self.chaos = marked_chaos if chaos is None else chaos
            self.toxiproxy_url = "http://127.0.0.1:1" if marked_chaos and proxy else None

        def miswired(self, name):
            return "it reaches RECO_DATABASE_URL directly" if name in bypassed else None

        def fault_proxy_gone(self):
            return False

        def up(self, log=print):
            calls.append(("up", self.chaos))
            bypassed.clear()
            self.toxiproxy_url = "http://127.0.0.1:1"

    return _Stack


class _Run:
    def __init__(self, experiment, stack, run_dir, echo, guardrails_file=None):
        self.interrupted = False

    def execute(self) -> int:
        return 0


def _chaos_run(monkeypatch, tmp_path, stack_class, running: bool) -> int:
    """`chaos run smoke-db-blip` against ``stack_class``, with a run that passes at once."""
    monkeypatch.setattr(command, "Stack", stack_class)
    monkeypatch.setattr(command, "_running", lambda _stack: running)
    monkeypatch.setattr(command, "_report", lambda _run_dir: None)
    monkeypatch.setattr(chaos.runner, "Run", _Run)
    argv = ["chaos", "run", "smoke-db-blip", "--state-dir", str(tmp_path / "s")]
    return main([*argv, "--out", str(tmp_path / "out")])


def _part_started(already: set[str], downs: list, fails: bool = False):
    """A stack where only ``already`` runs (e.g. `up --deps-only`); the run starts the rest."""

    class _Stack:
        chaos = False

        def __init__(self, state_dir, chaos=None):
            self.state_dir = state_dir

        def running(self):
            return set(already)

        def up(self, log=print):
            if fails:
                raise command.StackError("api did not get ready")

        def down(self, log=print, keep=()):
            downs.append(set(keep))

    return _Stack


@pytest.mark.parametrize(
    ("marked_chaos", "bypassed", "rewired"),
    [
        (True, {"api"}, True),  # `up --chaos` on a plain stack once left the apps direct
        (False, set(), True),
        (True, set(), False),  # wired as it says: nothing to start
    ],
)
def test_a_stack_whose_apps_bypass_the_proxies_is_brought_up_through_them(
    monkeypatch, tmp_path, marked_chaos, bypassed, rewired
):
    calls: list = []
    stack_class = _stack_class(marked_chaos, set(bypassed), calls)
    assert _chaos_run(monkeypatch, tmp_path, stack_class, running=True) == 0
    assert calls == ([("up", True)] if rewired else [])


def test_a_run_on_a_deps_only_stack_stops_only_what_it_started(monkeypatch, tmp_path):
    downs: list = []
    stack_class = _part_started({"postgres", "rabbitmq"}, downs)
    assert _chaos_run(monkeypatch, tmp_path, stack_class, running=False) == 0
    assert downs == [{"postgres", "rabbitmq"}]


def test_a_stack_marked_chaos_without_a_fault_proxy_is_brought_up_with_one(monkeypatch, tmp_path):
    calls: list = []
    stack_class = _stack_class(True, set(), calls, proxy=False)
    assert _chaos_run(monkeypatch, tmp_path, stack_class, running=True) == 0
    assert calls == [("up", True)]


def test_a_start_that_fails_part_way_stops_what_it_started(monkeypatch, tmp_path):
    downs: list = []
    stack_class = _part_started({"postgres"}, downs, fails=True)
    assert _chaos_run(monkeypatch, tmp_path, stack_class, running=False) == 2
    assert downs == [{"postgres"}]  # what ran before stays; the rest is stopped
