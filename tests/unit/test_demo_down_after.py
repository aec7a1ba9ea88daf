"""`demo --down-after` stops what the demo started, never a stack that ran before it."""

from __future__ import annotations

import pytest

import harness.cli
from harness.commands import demo

BEFORE = {"postgres": 1, "rabbitmq": 2, "api": 3, "relay": 4, "consumer": 5}
REWIRED = {"api": 13, "relay": 14, "consumer": 15, "toxiproxy": 16}  # through the proxies


def _stack_class(pids: dict[str, int], downs: list):
    class _Stack:
        """The stack as its state file says; ``up`` starts or rewires what it must."""

        def __init__(self, state_dir, chaos=None):
            self.state_dir = state_dir
            self.state = {"components": {name: {"pid": pid} for name, pid in pids.items()}}

        def running(self):
            return set(self.state["components"])

        def up(self, log=print):
            pids.update({"postgres": 1, "rabbitmq": 2, **REWIRED})

        def status(self):
            return []

        def down(self, log=print, keep=()):
            downs.append(set(keep))

    return _Stack


@pytest.mark.parametrize(
    ("running_before", "kept"),
    [
        (BEFORE, {"postgres", "rabbitmq"}),  # the apps were restarted through the proxies
        ({"postgres": 1, "rabbitmq": 2}, {"postgres", "rabbitmq"}),  # up --deps-only
        ({}, set()),  # nothing ran: everything is the demo's
    ],
)
def test_down_after_stops_only_what_the_demo_started(monkeypatch, tmp_path, running_before, kept):
    downs: list = []
    monkeypatch.setattr(demo, "Stack", _stack_class(dict(running_before), downs))
    real_main = harness.cli.main
    monkeypatch.setattr(harness.cli, "main", lambda argv: 0)  # the smoke check, the chaos run
    assert real_main(["demo", "--down-after", "--out", str(tmp_path / "run")]) == 0
    assert downs == [kept]
