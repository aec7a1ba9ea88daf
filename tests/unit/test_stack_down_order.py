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


class _Server:
    """A dependency server that records being stopped."""

    def __init__(self, name: str, stopped: list):
        self.name, self.stopped = name, stopped

    def stop(self) -> None:
        self.stopped.append(self.name)

    def liveness(self) -> str:
        return "running"


def test_down_keeps_what_ran_before_the_command_started_the_rest(tmp_path, monkeypatch):
    stack = Stack(tmp_path, chaos=True)
    stack.state["components"] = {
        name: {"pid": pid, "pgid": pid, "identity": "x"}
        for pid, name in enumerate(("api", "relay", "consumer", "toxiproxy"), 1)
    }
    stack.state["components"].update(postgres={"port": 5}, rabbitmq={"port": 6})
    stopped: list = []
    monkeypatch.setattr(stack_module, "stop_process", lambda pid, _i, timeout: stopped.append(pid))
    monkeypatch.setattr(stack_module, "kill_group", lambda pgid, marker: None)
    monkeypatch.setattr(stack, "postgres", lambda: _Server("postgres", stopped))
    monkeypatch.setattr(stack, "rabbitmq", lambda: _Server("rabbitmq", stopped))
    stack.down(log=lambda _line: None, keep={"postgres", "rabbitmq"})
    assert stopped == [1, 2, 3, 4]  # the apps and the fault proxy; not the dependencies
    saved = Stack(tmp_path).state
    assert set(saved["components"]) == {"postgres", "rabbitmq"} and "chaos" not in saved


def test_an_app_stopped_by_down_starts_again_without_a_runs_overrides(tmp_path, monkeypatch):
    """A chaos run killed before it could restore its test switches must not outlive `down`."""
    stack = Stack(tmp_path)
    stack.state["components"] = {"api": {"pid": 1, "pgid": 1, "identity": "x"}}
    switch = {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox"}
    stack.set_app_env("consumer", switch)
    stack.set_app_env("api", {"RECO_API_KEYS": "k"})
    monkeypatch.setattr(stack_module, "stop_process", lambda pid, _i, timeout: None)
    monkeypatch.setattr(stack_module, "kill_group", lambda pgid, marker: None)
    stack.down(log=lambda _line: None, keep={"api"})
    assert Stack(tmp_path).state["app_env"] == {"api": {"RECO_API_KEYS": "k"}}
    stack.down(log=lambda _line: None)
    assert Stack(tmp_path).state["app_env"] == {}


def test_a_dead_app_is_not_started_again_with_a_test_switch(tmp_path, monkeypatch):
    """The machine went down mid-experiment: `up` must not revive a guarantee-breaking switch."""
    stack = Stack(tmp_path)
    stack.state["components"] = {"consumer": {"pid": 1, "pgid": 1, "identity": "x"}}
    stack.set_app_env("consumer", {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "x_switch"})
    monkeypatch.setattr(stack, "liveness", lambda _name, _info: "gone")
    monkeypatch.setattr(stack_module, "kill_group", lambda pgid, marker: None)
    lines: list[str] = []
    stack._forget_dead_apps(lines.append)
    assert stack.state["app_env"] == {} and "components" in stack.state
    assert lines == [
        "consumer: not restarting it with the test switches an unfinished run left (x_switch)"
    ]
