"""Chaos experiments on a real stack: a quick subset passes, negative controls fail, and an
interrupted or killed runner still rolls back every fault."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.actions import Faults, commit_stall_active, set_commit_stall
from chaos.experiment import find
from chaos.faultproxy.client import Client
from chaos.runner import Run, guardrails_path
from harness.ports import ephemeral_range
from harness.pytest_plugins.stack import private_stack
from harness.stack import Stack, wait_until

QUICK_SCALE = float(os.environ.get("RECO_CHAOS_SCALE", "0.35"))
QUICK = [
    "smoke-db-blip",
    "db-blackhole",
    "db-commit-stall",
    "relay-kill",
    "consumer-kill",
    "unroutable",
    "poison",
]


@pytest.fixture(scope="module")
def chaos_stack():
    """A complete stack with a fault proxy on every link, shared by this module."""
    with private_stack("reco-chaos-", chaos=True) as stack:
        yield stack


def _run(stack: Stack, name: str, tmp_path: Path, scale: float = QUICK_SCALE) -> tuple[int, Path]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    code = Run(find(name).scaled(scale), stack, run_dir, echo=lambda _m: None).execute()
    return code, run_dir


def _assert_clean(stack: Stack) -> None:
    """No toxic, no disabled proxy, no stopped process is left behind."""
    with Client(stack.toxiproxy_url) as client:
        for name, proxy in client.proxies().items():
            assert proxy["enabled"], name
            assert proxy["toxics"] == [], name
    for name in ("api", "relay", "consumer"):
        pid = stack.state["components"][name]["pid"]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T", f"{name} left stopped"


@pytest.mark.parametrize("name", QUICK)
def test_quick_catalogue_passes(chaos_stack, tmp_path, name):
    code, run_dir = _run(chaos_stack, name, tmp_path)
    audit = json.loads((run_dir / "audit.json").read_text())
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert audit["lost_count"] == 0 and audit["duplicated_effects"] == 0, audit
    assert code == 0, json.dumps(verdict, indent=1)[:3000]
    # The run names the rule file that judged it; db-commit-stall's extends the defaults.
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["guardrails"] == str(guardrails_path(find(name)).resolve())
    rules = {result["rule"] for result in verdict["results"]}
    assert ("504 for writes caught in the stall" in " ".join(rules)) == (name == "db-commit-stall")
    _assert_clean(chaos_stack)


@pytest.mark.parametrize("name", ["nc-consumer-ack-before-commit", "nc-relay-mark-before-confirm"])
def test_negative_controls_make_the_audit_fail(chaos_stack, tmp_path, name):
    code, run_dir = _run(chaos_stack, name, tmp_path, scale=0.5)
    audit = json.loads((run_dir / "audit.json").read_text())
    assert code == 3, audit
    assert audit["lost_count"] > 0 or audit["duplicated_effects"] > 0
    _assert_clean(chaos_stack)
    env = chaos_stack.state.get("app_env", {})
    assert not env, "the test-only switch must be removed after the run"


def _runner(stack: Stack, run_dir: Path, *names: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "chaos",
            "run",
            *names,
            "--duration-scale",
            str(QUICK_SCALE),  # the fault is on for seconds: the signal lands inside it
            "--state-dir",
            str(stack.state_dir),
            "--out",
            str(run_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _proxy_down(stack: Stack) -> bool:
    with Client(stack.toxiproxy_url) as client:
        return not client.get_proxy("api_postgres")["enabled"]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_or_killed_run_rolls_back(chaos_stack, tmp_path, how):
    # Two experiments: an interruption stops the catalogue, not only the experiment running.
    proc = _runner(chaos_stack, tmp_path / "run", "db-down", "smoke-db-blip")
    try:
        wait_until(lambda: _proxy_down(chaos_stack), 60, "the fault to be applied")
        proc.send_signal(how)
        proc.wait(timeout=60)
        if how != signal.SIGKILL:
            assert proc.returncode == 2
            assert not (tmp_path / "run" / "smoke-db-blip").exists(), "the next one started"
            summary = json.loads((tmp_path / "run" / "summary.json").read_text())
            assert [r["outcome"] for r in summary["experiments"]] == ["interrupted", "not started"]
        # The runner's own cleanup (SIGINT) or its guardian (SIGKILL) heals the link.
        wait_until(lambda: not _proxy_down(chaos_stack), 30, "the rollback")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    time.sleep(0.5)
    _assert_clean(chaos_stack)


def _consumer_switched(state_dir: Path) -> bool | None:
    """Whether the recorded consumer runs with a test switch (None: not running)."""
    info = Stack(state_dir).state["components"]["consumer"]
    try:
        environ = Path(f"/proc/{info['pid']}/environ").read_bytes()
    except OSError:
        return None
    return b"RECO_UNSAFE_TEST_FAULTS=" in environ


def test_a_killed_runner_leaves_no_app_with_its_test_switch(chaos_stack, tmp_path):
    # A negative control's switch breaks a guarantee: a SIGKILLed run must not leave it on.
    proc = _runner(chaos_stack, tmp_path / "run", "nc-consumer-ack-before-commit")
    try:
        wait_until(lambda: _consumer_switched(chaos_stack.state_dir), 60, "the switch")
        proc.kill()
        proc.wait(timeout=10)
        # The guardian restarts the consumer as configured.
        wait_until(lambda: _consumer_switched(chaos_stack.state_dir) is False, 60, "the guardian")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    restored = Stack(chaos_stack.state_dir)
    assert restored.state.get("app_env") == {}
    chaos_stack.state = restored.state  # the module's later runs read the restarted pids
    _assert_clean(chaos_stack)


def test_a_stack_left_with_a_fault_is_refused_before_any_load(chaos_stack, tmp_path):
    # A link left disabled (a failed rollback) would read as events lost by the next run.
    with Client(chaos_stack.toxiproxy_url) as client, client.down("relay_rabbitmq"):
        code, run_dir = _run(chaos_stack, "smoke-db-blip", tmp_path)
        assert code == 2
        assert not list(run_dir.glob("history*.jsonl")), "no load may start"
        with client.toxic("consumer_postgres", "latency", latency=1):
            assert _run(chaos_stack, "poison", tmp_path)[0] == 2
    _assert_clean(chaos_stack)


def test_a_commit_stall_left_on_the_server_is_refused_and_rolled_back(chaos_stack, tmp_path):
    # Every write of the next run would wait: its outcome would be charged to that experiment.
    url = chaos_stack.database_url()
    set_commit_stall(url, True)
    try:
        assert commit_stall_active(url)
        code, run_dir = _run(chaos_stack, "smoke-db-blip", tmp_path)
        assert code == 2
        assert not list(run_dir.glob("history*.jsonl")), "no load may start"
    finally:
        Faults(chaos_stack).rollback({"action": "stall_commits", "database_url": url})
    assert not commit_stall_active(url)


def test_links_and_apps_listen_outside_the_ephemeral_range(chaos_stack):
    # A port the kernel may hand to an outgoing connection could be taken while its server is
    # down, and the proxy or app could not come back on it ("address already in use").
    low, high = ephemeral_range()
    listens = chaos_stack.state["components"]["toxiproxy"]["links"]
    ports = {name: int(listen.rsplit(":", 1)[1]) for name, listen in listens.items()}
    for name in ("api", "relay", "consumer"):
        ports[name] = chaos_stack.state["components"][name]["port"]
    assert all(not low <= port <= high for port in ports.values()), (ports, low, high)


def test_status_names_every_component_port_including_the_fault_proxy(chaos_stack):
    rows = {row["name"]: row for row in chaos_stack.status()}
    assert set(rows) >= {"postgres", "rabbitmq", "toxiproxy", "api", "relay", "consumer"}
    for name, row in rows.items():
        assert row["port"] and f":{row['port']}" in row["url"], (name, row)
