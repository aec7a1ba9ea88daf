"""Process memory and descriptors over a run: sampling from /proc, early vs late, the soak rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import guardrails, resources

ROOT = Path(__file__).resolve().parents[2]
LEAK_RULE = "soak: no leak in the API, relay or consumer"


def samples(seconds: int, api_mb_per_s: float = 0.0, fds_step_at: int | None = None) -> list:
    """One sample a second from t=1000: flat components, optionally a leaking API."""
    rows = []
    for i in range(seconds):
        rows.append(
            {
                "t": 1000.0 + i,
                "mem_api_mb": 120.0 + api_mb_per_s * i,
                "fds_api": 70 + (5 if fds_step_at is not None and i >= fds_step_at else 0),
                "mem_relay_mb": 20.0,
                "fds_relay": 12,
                "mem_consumer_mb": 20.0 + (i % 2) * 0.1,  # noise, no trend
                "fds_consumer": 9,
                "mem_postgres_mb": 50.0 + i,  # grows, but is not ours: reported, not gated
                "fds_postgres": 200,
                "threads_api": 5,
                "pg_conns_api": 4 + (i >= 320),  # one more session near the end
                "outbox_dead_tuples": (i % 60) * 100,  # vacuumed every minute
                "outbox_mb": 1.0 + i / 100,
            }
        )
    return rows


def test_named_early_and_late_phases_are_compared() -> None:
    phases = {"early": (1000.0, 1099.0), "late": (1300.0, 1399.0)}
    summary = resources.summarise(samples(400, api_mb_per_s=0.1), phases)
    api = summary["scopes"]["api"]
    assert api["mem_early_mb"] == pytest.approx(124.95)
    assert api["mem_late_mb"] == pytest.approx(154.95)
    assert api["mem_growth_mb"] == pytest.approx(30.0)
    assert api["mem_slope_mb_per_h"] == pytest.approx(360.0)
    assert summary["mem_growth_mb"] == pytest.approx(30.0)  # the worst gated component
    assert summary["windows"] == {"early": [1000.0, 1099.0], "late": [1300.0, 1399.0]}


def test_flat_components_show_no_growth_and_postgres_is_not_gated() -> None:
    summary = resources.summarise(samples(400), {"plateau": (1000.0, 1400.0)})
    assert summary["mem_growth_mb"] == pytest.approx(0.0, abs=0.11)
    assert summary["fd_growth"] == 0
    assert summary["scopes"]["postgres"]["mem_growth_mb"] > 200  # reported in its scope
    assert list(summary["scopes"])[:3] == ["api", "relay", "consumer"]
    assert summary["thread_growth"] == 0 and summary["pg_conn_growth"] == 1
    assert summary["scopes"]["api"]["pg_conns_early"] == 4
    outbox = summary["scopes"]["outbox"]
    assert outbox["dead_tuples_peak"] == 5900 and abs(outbox["dead_tuples_growth"]) <= 500
    assert outbox["size_mb_growth"] == pytest.approx(3.0)


def test_without_named_phases_the_plateau_quarters_are_compared() -> None:
    summary = resources.summarise(samples(400, fds_step_at=300), {"plateau": (1000.0, 1400.0)})
    assert summary["windows"] == {"early": [1000.0, 1100.0], "late": [1300.0, 1400.0]}
    assert summary["fd_growth"] == 5


def test_no_samples_give_no_values_so_the_rule_is_skipped() -> None:
    summary = resources.summarise([], {"early": (0.0, 1.0), "late": (2.0, 3.0)})
    assert "mem_growth_mb" not in summary and summary["samples"] == 0


def test_sample_reads_a_live_process_tree_and_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603
    try:
        values = resources.sample({"me": os.getpid, "gone": lambda: None})
    finally:
        child.kill()
        child.wait(timeout=10)
    assert values["procs_me"] >= 2  # this process and its child
    assert values["mem_me_mb"] > 5 and values["fds_me"] >= 3 and values["threads_me"] >= 2
    assert values["mem_gone_mb"] is None and values["procs_gone"] == 0
    assert resources.process_usage(child.pid) is None  # reaped: nothing to read


def test_stack_roots_follow_a_restarted_component() -> None:
    class FakeStack:
        state = {"components": {"consumer": {"pid": 111}}}

    stack = FakeStack()
    roots = resources.stack_roots(stack)
    assert roots["consumer"]() == 111 and roots["api"]() is None
    stack.state["components"]["consumer"]["pid"] = 222
    assert roots["consumer"]() == 222


def verdict_for(tmp_path: Path, summary: dict, profile: str) -> guardrails.Result | None:
    (tmp_path / "resources.json").write_text(json.dumps(summary))
    ruleset = guardrails.load_rules(ROOT / "guardrails.toml")
    verdict = guardrails.check_dir(tmp_path, ruleset, profile=profile)
    found = [r for r in verdict.results if r.rule == LEAK_RULE]
    return found[0] if found else None


def test_the_shipped_soak_rule_breaches_on_a_leak_and_passes_when_flat(tmp_path) -> None:
    phases = {"early": (1000.0, 1099.0), "late": (1300.0, 1399.0)}
    leak = verdict_for(tmp_path, resources.summarise(samples(400, 0.2), phases), "soak")
    assert leak is not None and leak.status == "breach" and leak.observed == pytest.approx(720)
    flat = verdict_for(tmp_path, resources.summarise(samples(400), phases), "soak")
    assert flat is not None and flat.status == "pass"
    assert verdict_for(tmp_path, resources.summarise(samples(400, 0.2), phases), "steady") is None
