"""`demo --down-after` stops what the demo started, never a stack that ran before it."""

from __future__ import annotations

import pytest

import harness.cli
from harness.commands import demo

DEPS = {"postgres": 1, "rabbitmq": 2}
PLAIN = {**DEPS, "api": 3, "relay": 4, "consumer": 5}
WIRED = {**DEPS, "api": 13, "relay": 14, "consumer": 15, "toxiproxy": 16}  # through proxies


def _stack_class(pids: dict[str, int], downs: list):
    class _Stack:
        """The stack as its state file says; ``up`` starts or rewires what it must."""

        def __init__(self, state_dir, chaos=None):
            self.state_dir = state_dir
            self._read()

        def _read(self) -> None:
            self.state = {"components": {name: {"pid": pid} for name, pid in pids.items()}}

        def running(self):
            return set(self.state["components"])

        def up(self, log=print):
            pids.update(WIRED)  # starts what is missing, restarts apps without proxies
            self._read()

        def status(self):
            return []

        def down(self, log=print, keep=()):
            downs.append(set(keep))

    return _Stack


@pytest.mark.parametrize(
    ("running_before", "kept"),
    [
        (PLAIN, set(DEPS)),  # the apps were restarted through the proxies: the demo's
        (DEPS, set(DEPS)),  # up --deps-only
        ({}, set()),  # nothing ran: everything is the demo's
        (WIRED, set(WIRED)),  # a chaos stack: the demo started nothing
    ],
)
def test_down_after_stops_only_what_the_demo_started(monkeypatch, tmp_path, running_before, kept):
    pids, downs = dict(running_before), []
    monkeypatch.setattr(demo, "Stack", _stack_class(pids, downs))

    def fake_main(argv):
        if argv[0] == "chaos":
            pids["api"] = 99  # a process fault restarted the API: still the one it was
        return 0

    real_main = harness.cli.main
    monkeypatch.setattr(harness.cli, "main", fake_main)  # the smoke check, the chaos run
    assert real_main(["demo", "--down-after", "--out", str(tmp_path / "run")]) == 0
    assert downs == [kept]
