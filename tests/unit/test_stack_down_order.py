"""`reco-harness down` stops the processes in the documented order."""

from __future__ import annotations

from harness.stack import stack as stack_module
from harness.stack.stack import Stack


def test_down_stops_the_api_then_the_relay_then_the_consumer(tmp_path, monkeypatch):
    stack = Stack(tmp_path)
    stack.state["components"] = {
        name: {"pid": pid, "pgid": pid, "identity": "x"}
        for pid, name in enumerate(("consumer", "api", "relay"), 1)
    }
    stopped: list[int] = []
    monkeypatch.setattr(
        stack_module, "stop_process", lambda pid, _identity, timeout: stopped.append(pid)
    )
    monkeypatch.setattr(stack_module, "kill_group", lambda pgid, marker: None)
    lines: list[str] = []
    stack.down(log=lines.append)
    assert lines == ["stopped api", "stopped relay", "stopped consumer"]
    assert stopped == [2, 3, 1]
