"""Real Locust runs (own processes, loopback) against the shared stack: outputs and exit codes.

Runs against stand-ins for the API (signals, distribution, overload) are in test_locust_direct.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness"]
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]
COMMON_OUTPUTS = {
    "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "report.html",
    "timeline.csv", "timeline.jsonl", "server_metrics.jsonl", "phases.json", "summary.json",
    "run.json", "verdict.json", "junit.xml", "audit.json", "locust.log", "locust_stats.json",
    "pipeline.jsonl", "resources.json", "pipeline.json", "drift.json",
}  # fmt: skip
HISTORY_FIELDS = {
    "t",
    "t_end",
    "op",
    "key",
    "event_ids",
    "outcome",
    "status",
    "latency_ms",
    "error",
}
IMPOSSIBLE = """
[[rule]]
name = "impossible global p99"
expr = "p(99) < 0.001"

[[rule]]
name = "impossible per-endpoint p99"
scope = "each"
expr = "p(99) < 0.001"

[[rule]]
name = "impossible server p99"
source = "server"
expr = "p(99) < 0.001"
"""


def load_run(stack, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [*CLI, "load", "run", "--profile", "smoke", "--duration", "8s",
            "--state-dir", str(stack.state_dir), "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def history(out: Path) -> list[dict]:
    ops = []
    for path in sorted(out.glob("history*.jsonl")):
        ops += [json.loads(line) for line in path.read_text().splitlines() if line]
    return ops


def locust_total(out: Path) -> int:
    """Locust's final count (its CSVs are rewritten each second and may lag at the end)."""
    entries = json.loads((out / "locust_stats.json").read_text())
    return sum(entry["num_requests"] for entry in entries)


def assert_complete_run(out: Path, proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {p.name for p in out.iterdir()}
    assert names >= COMMON_OUTPUTS, COMMON_OUTPUTS - names
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["passed"] and verdict["exit_code"] == 0
    assert verdict["counts"]["breaches"] == 0 and verdict["counts"]["skipped"] == 0
    summary = json.loads((out / "summary.json").read_text())
    # Our per-second timeline saw exactly what Locust counted.
    assert summary["endpoints"]["Aggregated"]["count"] == locust_total(out)
    assert set(summary["endpoints"]) == {
        "GET /v1/users/[id]/recommendations", "POST /v1/events", "GET /v1/events/[id]",
        "Aggregated",
    }  # fmt: skip
    assert not summary["generator_saturated"]
    ops = history(out)
    assert ops and all(set(op) >= HISTORY_FIELDS for op in ops)
    assert {op["outcome"] for op in ops} <= {"ok", "fail", "info"}
    audit = json.loads((out / "audit.json").read_text())
    assert audit["ok"] and audit["history_ops"] == len(ops)
    run = json.loads((out / "run.json").read_text())
    assert run["profile"] == "smoke" and run["git_commit"] and run["versions"]["locust"]
    assert Path(run["guardrails"]).is_absolute() and Path(run["guardrails"]).is_file()
    suite = ET.parse(out / "junit.xml").getroot()  # noqa: S314 - our own output
    assert suite.get("failures") == "0" and int(suite.get("tests")) > 10
    assert len((out / "server_metrics.jsonl").read_text().splitlines()) >= 2
    return summary


@pytest.fixture(scope="module")
def smoke_run(stack, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("smoke") / "run"
    return out, load_run(stack, out)


def test_smoke_run_writes_every_output_and_passes(smoke_run) -> None:
    out, proc = smoke_run
    assert_complete_run(out, proc)
    assert (out / "history.jsonl").exists()
    assert "PASS: 0 breach(es)" in proc.stdout
    phases = json.loads((out / "phases.json").read_text())
    assert {"all", "ramp", "plateau"} <= set(phases)
    # The server's windows are the differences of the scrapes around them: a scrape on every
    # phase edge and at the end of the warm-up (guardrails.toml: 5 s) keeps each window to its
    # own requests (every 5 s alone, `run` took in up to 5 s of the warm-up).
    lines = (out / "server_metrics.jsonl").read_text().splitlines()
    scrapes = [json.loads(line)["t"] for line in lines]
    edges = {phases["all"][0] + 5.0} | {t for name, w in phases.items() if name != "all" for t in w}
    for edge in sorted(edges):
        assert min(abs(t - edge) for t in scrapes) <= 0.5, (edge, scrapes)


def test_smoke_run_samples_the_pipeline_and_the_processes_memory(smoke_run) -> None:
    out, _ = smoke_run
    lines = [json.loads(line) for line in (out / "pipeline.jsonl").read_text().splitlines()]
    assert len(lines) >= 5 and all(line["outbox_backlog"] is not None for line in lines)
    assert all(line["procs_api"] >= 3 for line in lines)  # the master and its workers
    assert all(line["mem_relay_mb"] > 5 and line["fds_consumer"] > 3 for line in lines)
    assert all(line["pg_conns_api"] >= 1 and line["threads_relay"] >= 1 for line in lines)
    assert all(line["outbox_dead_tuples"] is not None for line in lines)
    summary = json.loads((out / "resources.json").read_text())
    assert set(summary["scopes"]) == {"api", "relay", "consumer", "postgres", "rabbitmq", "outbox"}
    assert summary["mem_growth_mb"] < 32 and summary["fd_growth"] <= 4
    assert summary["pg_conn_growth"] <= 2 and summary["thread_growth"] <= 2
    assert summary["worker_timeouts"] == summary["worker_crashes"] == summary["worker_boots"] == 0
    assert summary["idle_in_transaction"] == 0
    pipeline = json.loads((out / "pipeline.json").read_text())
    writes = sum(op["op"] == "write" and op["outcome"] == "ok" for op in history(out))
    # Exact event-to-feature latency from the inbox, for the events applied on the plateau.
    assert 0 < pipeline["e2e_count"] <= writes * 100
    assert 0 < pipeline["e2e_p50_ms"] <= pipeline["e2e_p99_ms"] <= pipeline["e2e_max_ms"] < 5000
    assert pipeline["outbox_age_p99_s"] < 2 and pipeline["dlq_ready_max"] == 0


def test_impossible_guardrails_list_every_breach_and_exit_1(smoke_run, stack, tmp_path) -> None:
    out, _ = smoke_run
    rules = tmp_path / "impossible.toml"
    rules.write_text(IMPOSSIBLE)
    # The same run judged again: every rule, every endpoint, both sources.
    judged = subprocess.run(
        [*CLI, "guardrails", "check", str(out), "--guardrails", str(rules), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert judged.returncode == 1, judged.stdout + judged.stderr
    breaches = json.loads((tmp_path / "verdict.json").read_text())["breaches"]
    assert len(breaches) == 5  # global + 3 endpoints + server
    for name in ("impossible global p99", "impossible per-endpoint p99", "impossible server p99"):
        assert name in judged.stdout
    # Plain `locust --headless` gates too (the quitting hook sets the exit code).
    direct = subprocess.run(
        [*LOCUST, "--headless", "--host", stack.state["components"]["api"]["url"],
         "--profile", "smoke", "-t", "5s", "--run-dir", str(tmp_path / "direct"),
         "--guardrails", str(rules), "--only-summary"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert direct.returncode == 1, direct.stdout + direct.stderr
    assert direct.stdout.count("BREACH ") == 5
    verdict = json.loads((tmp_path / "direct" / "verdict.json").read_text())
    assert verdict["exit_code"] == 1 and len(verdict["breaches"]) == 5


def test_malformed_guardrails_exit_2_with_file_line_and_reason(stack, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "reads"\nexpr = "p(99) <<< 200"\n')
    expected = f"{bad}:3: rule expr: cannot parse 'p(99) <<< 200'"
    via_cli = load_run(stack, tmp_path / "run", "--guardrails", str(bad))
    assert via_cli.returncode == 2 and expected in via_cli.stderr
    assert not (tmp_path / "run" / "timeline.jsonl").exists()  # refused before any load
    check = subprocess.run(
        [*CLI, "guardrails", "check", str(tmp_path), "--guardrails", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert check.returncode == 2 and expected in check.stderr
    direct = subprocess.run(
        [*LOCUST, "--headless", "--host", stack.state["components"]["api"]["url"],
         "--run-dir", str(tmp_path / "direct"), "--guardrails", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert direct.returncode == 2 and expected in direct.stderr


def test_two_workers_produce_the_same_outputs_as_one_process(smoke_run, stack, tmp_path) -> None:
    local_out, _ = smoke_run
    out = tmp_path / "distributed"
    proc = load_run(stack, out, "--workers", "2")
    summary = assert_complete_run(out, proc)
    workers = sorted(p.name for p in out.glob("history*.jsonl"))
    assert workers == ["history-0.jsonl", "history-1.jsonl"]
    local_names = {p.name for p in local_out.iterdir()} - {"history.jsonl"}
    assert local_names == {p.name for p in out.iterdir()} - set(workers)
    assert summary["endpoints"]["Aggregated"]["count"] > 0


def test_abort_on_fail_stops_the_run_early(stack, tmp_path) -> None:
    rules = tmp_path / "abort.toml"
    rules.write_text(
        '[settings]\ndelay_abort_eval = "2s"\n\n'
        '[[rule]]\nname = "trips at once"\nphase = "last 10s"\nexpr = "count < 1"\n'
        "abort_on_fail = true\n"
    )
    out = tmp_path / "aborted"
    started = time.monotonic()
    proc = subprocess.run(
        [*LOCUST, "--headless", "--host", stack.state["components"]["api"]["url"],
         "--profile", "smoke", "-t", "40s", "--run-dir", str(out), "--guardrails", str(rules),
         "--only-summary"],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert time.monotonic() - started < 25  # far from the 40 s asked for
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aborted"].startswith("trips at once: count = ")
    assert "run aborted early: trips at once" in proc.stdout
