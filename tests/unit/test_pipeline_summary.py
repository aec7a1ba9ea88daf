"""The plateau's pipeline samples reduce to the values the 'pipeline' guardrails judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import guardrails, pipeline_summary

ROOT = Path(__file__).resolve().parents[2]
RULE = "the pipeline kept up (outbox age, event-to-feature latency)"


def samples(ages: list[float], dlq: int = 0) -> list[dict]:
    return [
        {"t": 100.0 + i, "oldest_unpublished_s": age, "outbox_backlog": int(age * 50),
         "queue_ready": i % 3, "dlq_ready": dlq}
        for i, age in enumerate(ages)
    ]  # fmt: skip


def test_the_plateau_is_judged_and_the_ramp_is_not() -> None:
    rows = samples([9.0] * 10 + [0.1] * 99 + [1.5])  # the first 10 s are the ramp
    window = pipeline_summary.window_of({"all": (100, 210), "plateau": (110, 210)}, rows)
    summary = pipeline_summary.summarise(rows, window, {"e2e_p99_ms": 40.0})
    assert summary["window"] == [110.0, 210.0] and summary["samples"] == 100
    assert summary["outbox_age_p99_s"] == 0.1 and summary["outbox_age_max_s"] == 1.5
    assert summary["backlog_max"] == 75 and summary["queue_ready_max"] == 2
    assert summary["e2e_p99_ms"] == 40.0 and summary["unsampled_s"] == 0


def test_without_phases_the_samples_extent_is_used_and_gaps_are_counted() -> None:
    rows = samples([0.2] * 5)
    rows[2]["outbox_backlog"] = None  # the database did not answer that second
    window = pipeline_summary.window_of({}, rows)
    assert window == (100.0, 104.0)
    assert pipeline_summary.summarise(rows, window, None)["unsampled_s"] == 1
    assert pipeline_summary.window_of({}, []) is None
    assert pipeline_summary.summarise([], None, None) == {"window": None}


@pytest.mark.parametrize(("q", "expected"), [(50, 3), (99, 5), (100, 5), (1, 1)])
def test_nearest_rank_percentile(q, expected) -> None:
    assert pipeline_summary.percentile([5, 1, 4, 2, 3], q) == expected


def judge(tmp_path: Path, summary: dict) -> list:
    (tmp_path / "pipeline.json").write_text(json.dumps(summary))
    verdict = guardrails.check_dir(
        tmp_path, guardrails.load_rules(ROOT / "guardrails.toml"), profile="steady"
    )
    return [r for r in verdict.results if r.rule == RULE]


def test_the_shipped_rule_breaches_on_a_lagging_pipeline(tmp_path) -> None:
    rows = samples([0.1] * 100)
    good = pipeline_summary.summarise(rows, (100, 200), {"e2e_count": 900, "e2e_p99_ms": 60.0})
    assert {r.status for r in judge(tmp_path, good)} == {"pass"}
    lagging = pipeline_summary.summarise(
        samples([3.0] * 100, dlq=2), (100, 200), {"e2e_count": 900, "e2e_p99_ms": 7000.0}
    )
    breached = {r.expr for r in judge(tmp_path, lagging) if r.status == "breach"}
    assert breached == {"outbox_age_p99_s < 2", "e2e_p99_ms < 5000", "dlq_ready_max == 0"}


def test_a_plateau_with_nothing_applied_breaches_instead_of_passing_on_null(tmp_path) -> None:
    idle = pipeline_summary.summarise(
        samples([0.1] * 100), (100, 200), {"e2e_count": 0, "e2e_p99_ms": None}
    )
    breached = {r.expr for r in judge(tmp_path, idle) if r.status == "breach"}
    assert breached == {"e2e_count > 0", "e2e_p99_ms < 5000"}


def test_a_run_without_pipeline_results_breaches_the_required_rule(tmp_path) -> None:
    verdict = guardrails.check_dir(
        tmp_path, guardrails.load_rules(ROOT / "guardrails.toml"), profile="steady"
    )
    results = [r for r in verdict.results if r.rule == RULE]
    assert results and {r.status for r in results} == {"breach"}
    assert all(r.reason == "no pipeline results in this run" for r in results)
