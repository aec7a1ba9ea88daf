"""The shipped chaos rules fail a run whose API never came back or whose data is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import guardrails

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000
GET, POST = "GET /v1/users/[id]/recommendations", "POST /v1/events"
HEALTHY_AUDIT = {
    "fault_errors": 0,
    "fault_checks_failed": 0,
    "rollback_failures": 0,
    "lost_count": 0,
    "unexpected_count": 0,
    "failed_but_applied_count": 0,
    "duplicated_effects": 0,
    "missing_effects": 0,
    "dlq_matches": 1,
    "drained": 1,
    "worker_timeouts": 0,
    "readiness_recovered": True,
    "readiness_recovery_s": 1.5,
    "idle_in_transaction": 0,
    "steady_state_after": True,
}


def second(t: int, shed: int = 0) -> dict:
    """One timeline second: 20 GETs and 20 POSTs, ``shed`` of each answered 503."""
    row = {"n": 20, "sum": 200.0, "min": 10.0, "max": 10.0, "hist": {"10": 20}, "fail": 0}
    return {"t": t, "endpoints": {GET: row | {"shed": shed}, POST: row | {"shed": shed}}}


def server_sample(t: float) -> dict:
    buckets = {"0.05": 40.0 * (t - T0 + 1), "+Inf": 40.0 * (t - T0 + 1)}
    series = {"method": "GET", "path": "/v1/users/<user_id>/recommendations", "status": "200"}
    return {"t": t, "series": [series | {"buckets": buckets, "sum": 0.4, "count": buckets["+Inf"]}]}


def chaos_run(tmp_path: Path, audit: dict | None = None, shed_after_heal: int = 0) -> Path:
    """A 50 s run: fault from 15 to 30 s, then recovery (settled from 33 s)."""
    out = tmp_path / "run"
    out.mkdir()
    timeline = [second(T0 + i, shed_after_heal if i >= 30 else 0) for i in range(50)]
    (out / "timeline.jsonl").write_text("".join(json.dumps(s) + "\n" for s in timeline))
    samples = [server_sample(T0 + i) for i in range(0, 50, 5)]
    (out / "server_metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    phases = {"all": [T0, T0 + 50], "baseline": [T0, T0 + 14], "fault": [T0 + 15, T0 + 30]}
    phases |= {"recovery": [T0 + 30, T0 + 50], "settled": [T0 + 33, T0 + 50]}
    (out / "phases.json").write_text(json.dumps(phases))
    if audit is not None:
        (out / "audit.json").write_text(json.dumps(audit))
    return out


def verdict(out: Path, rules: str = "guardrails.toml"):
    return guardrails.check_dir(out, guardrails.load_rules(ROOT / "chaos" / rules))


def breached(out: Path, rules: str = "guardrails.toml") -> set[str]:
    return {r.rule for r in verdict(out, rules).results if r.status == "breach"}


def test_a_healthy_run_passes(tmp_path: Path) -> None:
    assert breached(chaos_run(tmp_path, HEALTHY_AUDIT)) == set()


def test_an_api_still_shedding_after_the_heal_fails(tmp_path: Path) -> None:
    out = chaos_run(tmp_path, HEALTHY_AUDIT, shed_after_heal=20)
    assert "requests recover after the heal (settled load)" in breached(out)


def test_readiness_that_never_came_back_fails(tmp_path: Path) -> None:
    audit = HEALTHY_AUDIT | {"readiness_recovered": False, "readiness_recovery_s": None}
    assert "self-recovery: ready again within 30 s of the heal (G7)" in breached(
        chaos_run(tmp_path, audit)
    )


def test_a_steady_state_broken_after_the_heal_fails(tmp_path: Path) -> None:
    out = chaos_run(tmp_path, HEALTHY_AUDIT | {"steady_state_after": False})
    assert "steady state holds again after the heal (G7)" in breached(out)


@pytest.mark.parametrize("rules", ["guardrails.toml", "guardrails-db-unreachable.toml"])
def test_a_run_without_its_audit_fails_every_audit_rule(tmp_path: Path, rules: str) -> None:
    result = verdict(chaos_run(tmp_path, audit=None), rules)
    audit_rules = [r for r in result.results if r.source == "audit"]
    assert audit_rules and all(r.status == "breach" for r in audit_rules)
    assert result.exit_code != 0


def test_a_run_without_server_metrics_fails(tmp_path: Path) -> None:
    out = chaos_run(tmp_path, HEALTHY_AUDIT)
    (out / "server_metrics.jsonl").unlink()
    assert "only documented failures: no 5xx other than 503 (server)" in breached(out)


def test_a_chaos_run_judges_its_audit_whatever_the_locust_summary_says(tmp_path: Path) -> None:
    """Locust's hook scopes a plain run to client data; chaos writes run.json around it."""
    out = chaos_run(tmp_path, HEALTHY_AUDIT | {"lost_count": 4})
    scope = {guardrails.JUDGED_WITHOUT: ["audit", "drift", "pipeline", "resources"]}
    (out / "summary.json").write_text(json.dumps({"profile": "steady"} | scope))
    (out / "run.json").write_text(json.dumps({"kind": "chaos", "profile": "steady"}))
    result = verdict(out)
    assert "no accepted event lost, invented or applied twice (G1-G3)" in breached(out)
    assert result.exit_code == 3


def test_clock_skew_rules_fail_a_write_refused_as_in_the_future_as_an_invariant(tmp_path):
    clean = {**HEALTHY_AUDIT, "writes_409_count": 0, "writes_422_count": 0}
    cases = [(clean, 0), (clean | {"writes_422_count": 3}, 3), (clean | {"writes_409_count": 1}, 3)]
    for index, (audit, code) in enumerate(cases):
        (tmp_path / str(index)).mkdir()
        out = chaos_run(tmp_path / str(index), audit)
        assert verdict(out, "guardrails-clock-skew.toml").exit_code == code, audit
