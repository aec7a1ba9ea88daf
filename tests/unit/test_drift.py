"""Latency drift between the early and late windows of a long run, and the soak's drift rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import drift, guardrails
from harness.guardrails.timeline import Timeline

ROOT = Path(__file__).resolve().parents[2]
RULE = "soak: late p99 within 20 % of the early p99"
PHASES = {"early": (1000.0, 1100.0), "late": (1900.0, 2000.0)}


def timeline(read_late_ms: float, write_late_ms: float = 40.0) -> Timeline:
    """Reads at 10 ms and writes at 40 ms early; late, whatever the test asks for."""
    tl = Timeline()
    for t in range(1000, 2000):
        late = t >= 1900
        for i in range(10):
            tl.record(t + i / 10, "GET /r", read_late_ms if late and i == 0 else 10.0)
            tl.record(t + i / 10, "POST /w", write_late_ms if late else 40.0)
    return tl


def test_no_drift_when_the_late_window_looks_like_the_early_one() -> None:
    summary = drift.summarise(timeline(10.0), PHASES)
    assert summary["p99_drift"] == pytest.approx(0.0, abs=0.01)
    assert set(summary["scopes"]) == {"GET /r", "POST /w", "Aggregated"}
    assert summary["scopes"]["POST /w"]["requests_early"] == 1000


def test_a_slow_tail_late_in_the_run_is_a_drift_measured_against_the_early_p99() -> None:
    summary = drift.summarise(timeline(10.0, write_late_ms=60.0), PHASES)
    write = summary["scopes"]["POST /w"]
    assert write["p99_early_ms"] == pytest.approx(40.0, rel=0.02)
    assert write["p99_late_ms"] == pytest.approx(60.0, rel=0.02)
    assert write["p99_drift"] == pytest.approx(0.5, abs=0.03)
    assert summary["p99_drift"] == pytest.approx(0.5, abs=0.03)


def test_fast_endpoints_are_judged_against_the_floor_not_their_own_p99() -> None:
    # Reads go from 10 ms to 15 ms at p99 (one request in ten): +50 % but only 5 ms.
    summary = drift.summarise(timeline(15.0), PHASES)
    assert summary["scopes"]["GET /r"]["p99_drift"] == pytest.approx(5 / drift.FLOOR_MS, abs=0.02)


def test_without_requests_there_is_nothing_to_judge() -> None:
    summary = drift.summarise(Timeline(), PHASES)
    assert "p99_drift" not in summary and summary["scopes"] == {}


def test_the_shipped_soak_rule_breaches_on_drift(tmp_path) -> None:
    rules = guardrails.load_rules(ROOT / "guardrails.toml")
    for late_ms, status in ((40.0, "pass"), (60.0, "breach")):
        summary = drift.summarise(timeline(10.0, write_late_ms=late_ms), PHASES)
        (tmp_path / "drift.json").write_text(json.dumps(summary))
        verdict = guardrails.check_dir(tmp_path, rules, profile="soak")
        assert [r.status for r in verdict.results if r.rule == RULE] == [status]
