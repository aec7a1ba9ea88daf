"""`reco-harness bench system --quick`: every ratio in one run, gated on the alarm thresholds.

The quick run takes a few minutes and starts its own PostgreSQL and RabbitMQ, so it runs
only with ``--benchmark-enable`` or ``RECO_BENCH=1``. The exit-code contract (0 pass,
1 below an alarm, 2 a section failed) is checked on fabricated reports, always.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
GATED = ("R_http", "R_write", "R_relay", "R_consumer")
SWEEPS = ("R_backlog_1e4", "R_backlog_1e5", "R_relays_2", "R_relays_4", "R_inbox_1e5")


def fake_report(**ratios: float) -> dict:
    values = {"R_http": 0.8, "R_write": 0.7, "R_relay": 0.8, "R_consumer": 0.9, **ratios}
    return {
        "mode": "quick",
        "ratios": {k: {"median": v, "min": v, "max": v, "noisy": False} for k, v in values.items()},
        "latency": {"e2e": {"p50_ms": 20, "p95_ms": 40, "p99_ms": 60, "max_ms": 80,
                            "offered_per_s": 2000, "host_busy": 0.973},
                    "e2e_half_pipeline": {"p50_ms": 5, "p95_ms": 9, "p99_ms": 14, "max_ms": 20,
                                          "offered_per_s": 2100, "host_busy": 0.61,
                                          "pipeline_capacity_per_s": 4200.0}},
        "absolute": {"relay_events_per_s": 4000.0},
        "cpu_s_per_1k": {"S2 relay": {"bench_process": 0.1, "postgres": 0.05}},
        "environment": {"date": "2026-11-29T00:00:00+00:00"},
        "noise": {"steal_percent": 0.0, "noisy_ratios": [], "noisy": False},
        "errors": {},
        "durations_s": {"total": 1.0},
    }  # fmt: skip


@pytest.fixture
def fake_run(monkeypatch):
    """Replace the measurement with a given report."""

    def use(report: dict) -> None:
        monkeypatch.setattr("harness.bench.system.run", lambda *a, **k: report)

    return use


def test_a_ratio_below_its_alarm_exits_1_and_names_it(fake_run, tmp_path, capsys):
    fake_run(fake_report(R_relay=0.35))
    assert main(["bench", "system", "--quick", "--out", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "BREACH" in printed and "R_relay" in printed
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert [b["metric"] for b in verdict["breaches"]] == ["ratios.R_relay.median"]


def test_missed_targets_above_the_alarms_pass_the_gate_but_are_reported(fake_run, tmp_path):
    fake_run(fake_report(R_http=0.65))  # below the 0.75 target, above the 0.6 alarm
    assert main(["bench", "system", "--quick", "--out", str(tmp_path)]) == 0
    assert "**MISSED**" in (tmp_path / "benchmark-system.md").read_text()
    targets = json.loads((tmp_path / "targets/verdict.json").read_text())
    assert "ratios.R_http.median" in {b["metric"] for b in targets["breaches"]}
    assert main(["bench", "system", "--gate", "target", "--out", str(tmp_path / "t")]) == 1


def test_the_summary_shows_how_busy_the_host_was_in_the_e2e_run(fake_run, tmp_path):
    fake_run(fake_report())
    assert main(["bench", "system", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "benchmark-system.md").read_text()
    assert "| host busy |" in text and "| 0.973 |" in text
    assert "| at half pipeline capacity (4,200/s, informational) | 5 | 9 | 14 | 20 | 2100 |" in text


def test_the_results_directory_is_judged_the_same_by_guardrails_check(fake_run, tmp_path):
    fake_run(fake_report(R_consumer=0.3))
    assert main(["bench", "system", "--out", str(tmp_path)]) == 1
    assert main(["guardrails", "check", str(tmp_path)]) == 1


def test_a_run_judged_by_its_own_rules_is_judged_by_them_again(fake_run, tmp_path, monkeypatch):
    monkeypatch.delenv("RECO_GUARDRAILS", raising=False)
    # Stricter than the shipped alarm (0.5): the fake's 0.9 passes one and breaches the other.
    strict = tmp_path / "strict.toml"
    strict.write_text(
        f'extends = "{ROOT / "guardrails.toml"}"\n[[rule]]\n'
        'replaces = "alarm: consumer / bare consume+insert+commit (R_consumer)"\n'
        'source = "benchmark"\nexpr = "ratios.R_consumer.median >= 0.95"\n'
        'profiles = ["bench-system"]\n'
    )
    fake_run(fake_report())
    out = tmp_path / "run"
    assert main(["bench", "system", "--out", str(out), "--guardrails", str(strict)]) == 1
    assert json.loads((out / "run.json").read_text())["guardrails"] == str(strict.resolve())
    assert main(["guardrails", "check", str(out)]) == 1  # the recorded file, not the default
    shipped = str(ROOT / "guardrails.toml")
    assert main(["guardrails", "check", str(out), "--guardrails", shipped]) == 0


def test_bench_http_results_are_judged_the_same_by_guardrails_check(monkeypatch, tmp_path):
    monkeypatch.delenv("RECO_GUARDRAILS", raising=False)
    report = fake_report(R_write=0.2)  # below its 0.3 alarm
    report["ratios"] = {k: report["ratios"][k] for k in ("R_http", "R_write")}
    monkeypatch.setattr("harness.bench.http.run", lambda *a, **k: report)
    assert main(["bench", "http", "--out", str(tmp_path)]) == 1
    run = json.loads((tmp_path / "run.json").read_text())
    assert run == {"profile": "bench-system", "guardrails": str(ROOT / "guardrails.toml")}
    assert main(["guardrails", "check", str(tmp_path)]) == 1
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert [b["metric"] for b in verdict["breaches"]] == ["ratios.R_write.median"]


def test_a_failed_section_exits_2(fake_run, tmp_path):
    report = fake_report()
    report["errors"] = {"B3 pgbench": "RuntimeError: pgbench failed"}
    fake_run(report)
    assert main(["bench", "system", "--out", str(tmp_path)]) == 2


def _enabled(config: pytest.Config) -> bool:
    enabled = config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")
    return enabled or os.environ.get("RECO_BENCH") == "1"


@pytest.mark.timeout(600)
def test_quick_system_benchmark_meets_every_alarm(request, tmp_path):
    if not _enabled(request.config):
        pytest.skip("the system benchmark runs with --benchmark-enable or RECO_BENCH=1")
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "system", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    shown = f"{result.stdout}\n{result.stderr[-3000:]}"
    report = json.loads((out / "benchmark-system.json").read_text())
    assert not report["errors"], shown
    for name in GATED + SWEEPS:
        assert {"median", "min", "max"} <= set(report["ratios"][name]), name
    assert report["latency"]["e2e"]["p99_ms"] > 0
    assert 0 < report["latency"]["e2e"]["host_busy"] <= 1
    assert "e2e_half_pipeline" not in report["latency"]  # S4' is left out of the quick plan
    assert all(0 < b <= 1 for b in report["absolute"]["relays_1_host_busy"])
    assert report["cpu_s_per_1k"]["S2 relay"]["postgres"] > 0
    assert "noisy" in report["noise"]
    print(shown)
    assert result.returncode == 0, shown
