"""The shipped load gate: missing data never passes, server p99s are safe, sheds do not abort."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from harness import guardrails
from harness.guardrails import check_dir, evaluate, load_rules, parse_rules
from harness.guardrails.prometheus import Scrapes, Snapshot, quantile, unbounded_thresholds
from harness.guardrails.timeline import Timeline
from loadtests import outputs, shapes
from loadtests.runstate import RunState
from service.metrics import HISTOGRAM_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "guardrails.toml")
T0 = 1_800_000_000
READ = "GET /v1/users/[id]/recommendations"
WRITE = "POST /v1/events"
STATUS = "GET /v1/events/[id]"
LOAD_PROFILES = sorted(shapes.PROFILES)


def healthy(seconds: int, shed_share: float = 0.0, fail_share: float = 0.0) -> Timeline:
    """A run that meets every client-side rule (optionally shedding or failing a share)."""
    tl = Timeline()
    for s in range(seconds):
        t = T0 + s
        tl.set_meta(t, users=10, offered_rps=20.0)
        for i in range(20):
            outcome = "ok"
            if i < 20 * shed_share:
                outcome = "shed"
            elif i < 20 * (shed_share + fail_share):
                outcome = "fail"
            name = (READ, READ, READ, READ, WRITE)[i % 5] if i % 10 else STATUS
            tl.record(t, name, 12.0, outcome)
    return tl


def phases(profile: str, seconds: int) -> dict[str, tuple[float, float]]:
    shape = shapes.build(profile, 10, seconds, 2)
    out = {name: (T0 + a, T0 + b) for name, (a, b) in shape.phases.items()}
    return {"all": (T0, T0 + seconds), **out}


def test_a_healthy_soak_with_client_data_only_does_not_pass() -> None:
    verdict = evaluate(RULES, {"locust": healthy(600)}, phases=phases("soak", 600), profile="soak")
    missing = {r.source for r in verdict.breaches}
    assert missing == {"server", "resources", "pipeline", "drift"}
    assert all(r.observed is None for r in verdict.breaches)  # the client side was fine
    assert verdict.exit_code == 1
    # The audit is enforced by `load run` itself: a missing audit is never "data lost" (3).
    assert {r.source for r in verdict.skipped} == {"audit"}


@pytest.mark.parametrize("snapshots", [0, 1])
def test_no_usable_scrape_breaches_every_server_rule_alike(snapshots: int) -> None:
    sources: dict = {"locust": healthy(60)}
    if snapshots:
        sources["server"] = Scrapes([Snapshot(T0 + 1, {})])
    verdict = evaluate(RULES, sources, phases=phases("steady", 60), profile="steady")
    server = [r for r in verdict.results if r.source == "server"]
    assert server and {r.status for r in server} == {"breach"}


def test_required_rules_name_their_load_profiles() -> None:
    """A required rule without profiles would also judge benchmark runs, which lack its data."""
    required = [r for r in RULES.rules if r.required]
    assert required and all(r.profiles for r in required)
    assert all(set(r.profiles) <= set(shapes.PROFILES) for r in required)
    for profile in ("smoke", "steady", "step", "soak"):
        server = {r.name for r in RULES.for_profile(profile) if r.source == "server"}
        assert len(server) == 3, profile
        assert all(r.required for r in RULES.for_profile(profile) if r.source == "server")
    for profile in LOAD_PROFILES:
        assert any(r.source == "resources" and r.required for r in RULES.for_profile(profile))
    assert not any(r.required for r in RULES.rules if r.source == "audit")


def _estimate(values_s: list[float], q: float) -> float:
    """The quantile the server gate estimates from the service's own histogram buckets."""
    histogram = Histogram("probe_seconds", "probe", buckets=HISTOGRAM_BUCKETS,
                          registry=CollectorRegistry())  # fmt: skip
    for value in values_s:
        histogram.observe(value)
    buckets = {
        float(s.labels["le"]): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if s.name.endswith("_bucket")
    }
    result = quantile(q, buckets)
    assert result is not None
    return result


@pytest.mark.parametrize(("true_p99_s", "threshold_s"), [(0.245, 0.2), (0.48, 0.3)])
def test_a_true_p99_above_the_threshold_is_never_estimated_below_it(true_p99_s, threshold_s):
    # 98.9 % fast, then 1.1 % at the true p99: the 99th percentile is that slow value, and
    # its rank sits at the start of its bucket, where a wide bucket interpolates lowest.
    values = [0.02] * 989 + [true_p99_s] * 11
    assert _estimate(values, 0.99) > threshold_s


def test_estimates_stay_on_the_right_side_of_every_bucket_bound() -> None:
    rng = random.Random(7)
    bounds = [b for b in HISTOGRAM_BUCKETS if b <= 1.0]
    for _ in range(300):
        scale = rng.choice((0.01, 0.05, 0.1, 0.2))
        values = [rng.expovariate(1 / scale) for _ in range(rng.randint(50, 400))]
        ranked = sorted(values)
        for q in (0.99, 0.999):
            true = ranked[max(0, math.ceil(len(ranked) * q) - 1)]  # nearest rank
            estimate = _estimate(values, q)
            for bound in bounds:
                assert (estimate > bound) == (true > bound), (true, estimate, bound)


def test_every_shipped_server_quantile_threshold_is_a_bucket_bound() -> None:
    assert unbounded_thresholds(RULES.rules, HISTOGRAM_BUCKETS) == []
    bad = parse_rules('[[rule]]\nsource = "server"\nexpr = ["p(99) < 250", "avg < 7"]\n')
    problems = unbounded_thresholds(bad.rules, HISTOGRAM_BUCKETS)
    assert len(problems) == 1 and "no bucket bound at 250 ms" in problems[0]


def test_bucket_count_stays_modest() -> None:
    assert len(HISTOGRAM_BUCKETS) <= 14


def _abort_verdict(profile: str, tl: Timeline):
    rules = [r for r in RULES.for_profile(profile) if r.abort_on_fail]
    return evaluate(RULES, {"locust": tl}, phases=phases(profile, 60), profile=profile, rules=rules)


@pytest.mark.parametrize("profile", ["spike", "stress"])
def test_intended_sheds_do_not_cut_an_overload_profile_short(profile: str) -> None:
    assert not _abort_verdict(profile, healthy(60, shed_share=0.6)).breaches
    assert _abort_verdict(profile, healthy(60, fail_share=0.6)).breaches


def test_a_service_that_only_sheds_at_nominal_load_is_stopped() -> None:
    assert _abort_verdict("steady", healthy(60, shed_share=0.6)).breaches
    assert not _abort_verdict("steady", healthy(60)).breaches


def test_nan_in_a_json_source_is_a_breach_not_missing_data() -> None:
    rules = parse_rules(
        '[[rule]]\nsource = "pipeline"\nexpr = ["e2e_p99_ms < 5000", "e2e_p99_ms != 1"]\n'
    )
    verdict = evaluate(rules, {"pipeline": {"e2e_p99_ms": float("nan")}})
    assert [r.status for r in verdict.results] == ["breach", "breach"]
    assert verdict.results[0].reason == "not a number in pipeline"
    assert verdict.exit_code == 1


@pytest.mark.parametrize(("served", "passes"), [(10, True), (5, False)])
def test_overload_goodput_is_judged_against_the_capacity(tmp_path, served, passes) -> None:
    """Offered 2 C = 20 rps; a service that keeps serving C passes, one that collapses fails."""
    shape = shapes.build("overload", duration=70, capacity_rps=10, user_rps=1)
    state = RunState(run_dir=tmp_path, profile="overload", shape=shape, t0=T0)
    for s in range(70):
        state.timeline.set_meta(T0 + s, users=20, offered_rps=20.0)
        for i in range(20):
            outcome = "ok" if i < served else ("shed" if i % 2 else "fail")
            state.timeline.record(T0 + s, READ, 12.0, outcome)
    outputs.write_outputs(state)
    goodput = json.loads((tmp_path / "overload.json").read_text())
    assert goodput["goodput_ratio"] == served / 10
    rules = [r for r in RULES.for_profile("overload") if r.source == "overload"]
    verdict = check_dir(tmp_path, RULES, profile="overload")
    results = [r for r in verdict.results if r.rule == rules[0].name]
    assert [r.status for r in results] == ["pass" if passes else "breach"]


def test_overload_without_sheds_fails_the_required_shed_rule() -> None:
    scrapes = Scrapes([Snapshot(T0, {}), Snapshot(T0 + 60, {})])
    verdict = evaluate(
        RULES, {"locust": healthy(60), "server": scrapes}, phases=phases("overload", 60),
        profile="overload",
    )  # fmt: skip
    shed = [r for r in verdict.results if r.rule == "overload: shedding stays cheap (server)"]
    assert [r.status for r in shed] == ["breach"]


def test_a_plain_locust_run_is_judged_on_what_it_recorded(tmp_path) -> None:
    """Client and server rules bind it; the load-run sources are out of its scope, and a
    second judgement (guardrails check) reads that scope from the run, so it agrees."""
    healthy(600).write_jsonl(tmp_path / "timeline.jsonl")
    (tmp_path / "phases.json").write_text(json.dumps(phases("soak", 600)))
    full = check_dir(tmp_path, RULES, profile="soak")
    assert {"pipeline", "resources", "drift"} <= {r.source for r in full.breaches}
    scope = {guardrails.JUDGED_WITHOUT: sorted(outputs.LOAD_RUN_SOURCES)}
    (tmp_path / "summary.json").write_text(json.dumps({"profile": "soak"} | scope))
    plain = check_dir(tmp_path, RULES)
    assert {r.source for r in plain.results} <= {"locust", "server"}
    assert {r.source for r in plain.breaches} == {"server"}  # required, and not scraped
    # load run on the local stack judges everything: its run.json overrides the summary.
    (tmp_path / "run.json").write_text(json.dumps({guardrails.JUDGED_WITHOUT: []}))
    assert {"pipeline", "resources"} <= {r.source for r in check_dir(tmp_path, RULES).breaches}


def test_a_directory_without_a_profile_is_not_held_to_profile_scoped_rules(tmp_path) -> None:
    """A contract run's directory holds contract.json only: no load rule may demand data."""
    (tmp_path / "contract.json").write_text(json.dumps({"passed": True, "failures": 0}))
    verdict = check_dir(tmp_path, RULES)
    assert verdict.breaches == []
    assert verdict.exit_code == 0
