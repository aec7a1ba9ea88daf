"""`up --chaos` on a running plain stack puts every app's links through the fault proxies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from chaos.runner import Run
from harness.cli import main
from harness.commands import chaos as chaos_command
from harness.stack import Stack
from harness.stack.faults import LINKS
from harness.stack.identity import environment, identity

APPS = ("api", "relay", "consumer")
ENV_FOR = {"postgres": "RECO_DATABASE_URL", "rabbitmq": "RECO_AMQP_URL"}


@pytest.fixture
def state_dir(stack_state_dir: Path) -> Path:
    return stack_state_dir


def _pids(stack: Stack) -> dict[str, int]:
    return {name: stack.state["components"][name]["pid"] for name in APPS}


def _through_proxies(stack: Stack) -> None:
    """Each app's own environment names its link's proxy port for every link it has."""
    listens = stack.state["components"]["toxiproxy"]["links"]
    for link, (app, dependency) in LINKS.items():
        env = environment(stack.state["components"][app]["pid"], tuple(ENV_FOR.values()))
        assert env is not None
        assert listens[link].rsplit(":", 1)[1] in env[ENV_FOR[dependency]], (link, env)


def test_up_chaos_on_a_plain_stack_rewires_the_apps_and_a_miswired_one_is_refused(state_dir):
    assert main(["up", "--state-dir", str(state_dir)]) == 0
    plain = _pids(Stack(state_dir))

    assert main(["up", "--chaos", "--state-dir", str(state_dir)]) == 0
    stack = Stack(state_dir)
    assert stack.chaos
    rewired = _pids(stack)
    assert all(rewired[name] != plain[name] for name in APPS)  # restarted through the proxies
    _through_proxies(stack)
    assert [stack.miswired(name) for name in APPS] == [None, None, None]

    # Once wired, `up --chaos` again leaves the apps (and the proxies' ports) alone.
    assert main(["up", "--chaos", "--state-dir", str(state_dir)]) == 0
    assert _pids(Stack(state_dir)) == rewired
    assert not chaos_command._miswired(stack)

    # A fault proxy that died took every link with it: a chaos run on that stack brings up a
    # new proxy and moves the apps onto it, rather than injecting faults into nothing.
    proxy_pid = stack.state["components"]["toxiproxy"]["pid"]
    os.kill(proxy_pid, signal.SIGKILL)
    for _ in range(100):  # the kill lands within milliseconds; bounded all the same
        if identity(proxy_pid) is None:
            break
        time.sleep(0.05)
    assert chaos_command._miswired(stack)
    assert main(["up", "--chaos", "--state-dir", str(state_dir)]) == 0
    stack = Stack(state_dir)
    assert not chaos_command._miswired(stack)
    _through_proxies(stack)
    rewired = _pids(stack)

    # A stack marked chaos whose API kept a direct link (as `up --chaos` once left it) is
    # caught by the chaos run before any load or fault: its faults would reach nothing.
    stack.set_app_env("api", {"RECO_DATABASE_URL": stack.database_url()})
    stack.stop_app("api")
    stack.start_app("api")
    stack.set_app_env("api", None)
    assert "RECO_DATABASE_URL" in (stack.miswired("api") or "")
    run = object.__new__(Run)  # only the state the check reads
    run.stack = stack
    assert [problem.split(":")[0] for problem in run._miswired()] == ["api"]
