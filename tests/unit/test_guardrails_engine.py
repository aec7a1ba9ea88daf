"""The guardrail engine: scopes, phases, every breach reported, exit codes and report formats."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness.guardrails import evaluate, parse_rules
from harness.guardrails.sources import LocustSource
from harness.guardrails.timeline import Timeline
from harness.guardrails.verdict import Verdict

T0 = 1_800_000_000
READ = "GET /v1/users/[id]/recommendations"
WRITE = "POST /v1/events"


def timeline() -> Timeline:
    """60 s: reads at 10 ms, writes at 50 ms; from second 30 on reads slow to 300 ms."""
    tl = Timeline()
    for s in range(60):
        t = T0 + s
        tl.set_meta(t, users=10, offered_rps=10.0)
        for _ in range(8):
            tl.record(t, READ, 300.0 if s >= 30 else 10.0)
        tl.record(t, WRITE, 50.0)
        tl.record(t, WRITE, 50.0, "fail" if s == 45 else "ok")
    return tl


def run(text: str, sources=None, **kw):
    ruleset = parse_rules(text, "g.toml")
    return evaluate(ruleset, sources if sources is not None else {"locust": timeline()}, **kw)


def test_global_scope_merges_every_endpoint() -> None:
    verdict = run('[[rule]]\nexpr = ["count == 600", "rps == 10", "fail_count == 1"]\n')
    assert [r.status for r in verdict.results] == ["pass"] * 3
    assert verdict.exit_code == 0 and verdict.passed


def test_each_scope_checks_every_endpoint_and_reports_every_breach() -> None:
    verdict = run('[[rule]]\nscope = "each"\nexpr = ["p(50) < 60", "p(99) < 100"]\n')
    by = {(r.endpoint, r.metric): r for r in verdict.results}
    assert set(by) == {(READ, "p(50)"), (READ, "p(99)"), (WRITE, "p(50)"), (WRITE, "p(99)")}
    assert by[(WRITE, "p(50)")].status == "pass"
    assert by[(READ, "p(50)")].observed == 10.0 and by[(READ, "p(50)")].status == "pass"
    assert by[(READ, "p(99)")].observed == 300.0 and by[(READ, "p(99)")].status == "breach"
    assert by[(WRITE, "p(99)")].status == "pass"
    assert verdict.exit_code == 1 and len(verdict.breaches) == 1


def test_named_scope_matches_method_and_path_or_the_path_alone() -> None:
    verdict = run(
        f'[[rule]]\nscope = "{WRITE}"\nexpr = "fail_count == 1"\n'
        '[[rule]]\nscope = "/v1/events"\nexpr = "count == 120"\n'
    )
    assert [r.status for r in verdict.results] == ["pass", "pass"]


def test_a_named_endpoint_without_data_is_a_breach_not_a_silent_pass() -> None:
    verdict = run('[[rule]]\nscope = "GET /v1/typo"\nexpr = "p(99) < 100"\n')
    (result,) = verdict.results
    assert result.status == "breach" and result.observed is None
    assert "no data for GET /v1/typo" in result.message()


def test_every_breached_rule_is_listed_with_observed_and_expected() -> None:
    verdict = run(
        '[[rule]]\nname = "a"\nexpr = "p(99) < 0.001"\n'
        '[[rule]]\nname = "b"\nexpr = ["avg < 0.001", "max < 0.001"]\n'
        '[[rule]]\nname = "c"\nexpr = "count > 0"\n'
    )
    assert [b.rule for b in verdict.breaches] == ["a", "b", "b"]
    assert verdict.breaches[0].message() == "p(99) = 300 ms, expected < 0.001 ms"
    assert verdict.exit_code == 1


@pytest.mark.parametrize(
    ("phase", "p99"),
    [("first 10s", 10.0), ("last 10s", 300.0), ("run", 300.0), ("all", 300.0), ("early", 10.0)],
)
def test_phases_select_time_windows(phase: str, p99: float) -> None:
    phases = {"early": (T0, T0 + 20)}
    verdict = run(
        f'[[rule]]\nscope = "{READ}"\nphase = "{phase}"\nexpr = "p(99) < 100"\n', phases=phases
    )
    assert verdict.results[0].observed == p99


def test_warmup_is_left_out_of_the_run_phase() -> None:
    text = f'[settings]\nwarmup = "30s"\n[[rule]]\nscope = "{READ}"\nexpr = "p(50) < 100"\n'
    assert run(text).results[0].observed == 300.0  # only the slow half remains
    text = text.replace('expr = "p(50)', 'phase = "all"\nexpr = "p(50)')
    assert run(text).results[0].observed == 10.0


def test_baseline_fault_and_recovery_come_from_recorded_phases() -> None:
    phases = {"baseline": (T0, T0 + 30), "fault": (T0 + 30, T0 + 40)}
    text = (
        f'[[rule]]\nscope = "{READ}"\nphase = "baseline"\nexpr = "p(99) < 100"\n'
        f'[[rule]]\nscope = "{READ}"\nphase = "fault"\nexpr = "p(99) < 100"\n'
        f'[[rule]]\nscope = "{READ}"\nphase = "recovery"\nexpr = "p(99) < 100"\n'
    )
    base, fault, recovery = run(text, phases=phases).results
    assert base.status == "pass" and fault.status == "breach"
    assert recovery.status == "skipped" and "not recorded" in recovery.reason


def test_missing_sources_are_skipped_unless_required() -> None:
    text = '[[rule]]\nsource = "contract"\nexpr = "failures == 0"\n'
    (skipped,) = run(text).results
    assert skipped.status == "skipped" and "no contract results" in skipped.reason
    (required,) = run(text.replace("[[rule]]\n", "[[rule]]\nrequired = true\n")).results
    assert required.status == "breach"


def test_an_invariant_breach_exits_3_even_next_to_ordinary_breaches() -> None:
    text = (
        '[[rule]]\nexpr = "p(99) < 0.001"\n'
        '[[rule]]\nsource = "audit"\nexpr = ["lost == 0", "duplicated == 0"]\n'
    )
    sources = {"locust": timeline(), "audit": {"lost": ["id-1", "id-2"], "duplicated": 0}}
    verdict = run(text, sources)
    assert verdict.exit_code == 3
    lost = next(r for r in verdict.results if r.metric == "lost")
    assert lost.observed == 2 and lost.invariant and lost.status == "breach"
    clean = run(text, {"locust": timeline(), "audit": {"lost": [], "duplicated": 0}})
    assert clean.exit_code == 1


def test_profiles_filter_rules() -> None:
    text = '[[rule]]\nexpr = "p(99) < 0.001"\nprofiles = ["steady"]\n'
    assert run(text, profile="smoke").results == []
    assert run(text, profile="steady").exit_code == 1


def test_pacing_metrics_compare_achieved_with_offered() -> None:
    verdict = run(
        '[[rule]]\nexpr = ["offered_rps == 10", "throughput_ratio == 1", "saturated_s == 0"]\n'
    )
    assert [r.status for r in verdict.results] == ["pass"] * 3


def test_knee_comes_from_the_run_summary() -> None:
    source = LocustSource(timeline(), {"knee": {"rps": 140.0, "users": 70}})
    verdict = run('[[rule]]\nexpr = ["knee_rps >= 100", "knee_users > 80"]\n', {"locust": source})
    assert [r.status for r in verdict.results] == ["pass", "breach"]


def test_named_values_support_scopes_and_dotted_paths() -> None:
    contract = {
        "failures": 0,
        "scopes": {"GET /x": {"failed": 1}},
        "ratios": {"R": {"median": 0.8}},
    }
    text = (
        '[[rule]]\nsource = "contract"\nexpr = ["failures == 0", "ratios.R.median >= 0.75"]\n'
        '[[rule]]\nsource = "contract"\nscope = "each"\nexpr = "failed == 0"\n'
    )
    verdict = run(text, {"contract": contract})
    assert [r.status for r in verdict.results] == ["pass", "pass", "breach"]
    assert verdict.breaches[0].endpoint == "GET /x"


def test_outputs_json_junit_and_table_list_every_breach() -> None:
    verdict = run(
        '[[rule]]\nname = "slow"\nscope = "each"\nexpr = "p(99) < 0.001"\n'
        '[[rule]]\nname = "fine"\nexpr = "count > 0"\n'
        '[[rule]]\nname = "absent"\nsource = "audit"\nexpr = "lost == 0"\n'
    )
    data = json.loads(verdict.to_json())
    assert data["exit_code"] == 1 and not data["passed"]
    assert data["counts"] == {"checks": 4, "passed": 1, "breaches": 2, "skipped": 1}
    assert {b["target"] for b in data["breaches"]} == {READ, WRITE}
    assert all("expected < 0.001 ms" in b["message"] for b in data["breaches"])
    suite = ET.fromstring(verdict.to_junit().split("\n", 1)[1])  # noqa: S314 - our own output
    assert (
        suite.get("tests") == "4" and suite.get("failures") == "2" and suite.get("skipped") == "1"
    )
    assert len(suite.findall("testcase/failure")) == 2
    table = verdict.table()
    assert table.splitlines()[1].startswith("BREACH") and table.splitlines()[2].startswith("BREACH")
    assert table.splitlines()[-1] == "BREACH: 2 breach(es), 1 passed, 1 skipped (exit 1)"


def test_junit_names_every_unjudged_reason_uniquely() -> None:
    # CI tools key test cases by class and name: duplicates would merge into one error.
    verdict = Verdict(errors=["audit could not run", "no usable scrape"], interrupted="SIGTERM")
    suite = ET.fromstring(verdict.to_junit().split("\n", 1)[1])  # noqa: S314 - our own output
    cases = suite.findall("testcase")
    assert suite.get("errors") == "3" and len(cases) == 3
    assert [c.get("name") for c in cases] == ["verdict", "verdict (2)", "verdict (3)"]


def test_junit_stays_well_formed_when_an_error_quotes_control_characters() -> None:
    # An exception or a coloured log line must not make the file unreadable to a strict parser.
    verdict = Verdict(errors=["audit: \x1b[31mboom\x1b[0m \x00"])
    suite = ET.fromstring(verdict.to_junit().split("\n", 1)[1])  # noqa: S314 - our own output
    assert suite.find("testcase/error").get("message") == "audit: \\x1b[31mboom\\x1b[0m \\x00"


def test_junit_times_each_check_by_its_window_and_the_suite_by_the_time_they_cover() -> None:
    verdict = run(
        '[[rule]]\nname = "head"\nphase = "first 20s"\nexpr = "count > 0"\n'
        '[[rule]]\nname = "early"\nphase = "first 40s"\nexpr = "count > 0"\n'
        '[[rule]]\nname = "tail"\nphase = "last 30s"\nexpr = "count > 0"\n'
        '[[rule]]\nname = "lost"\nsource = "audit"\nexpr = "lost == 0"\n'
    )
    verdict.errors.append("audit could not run")
    suite = ET.fromstring(verdict.to_junit().split("\n", 1)[1])  # noqa: S314 - our own output
    times = {c.get("name").split(" ")[0]: c.get("time") for c in suite.iter("testcase")}
    # The audit has no window and the unjudged reason judged no time of the run: both 0.
    assert times == {
        "verdict": "0.000",
        "head": "20.000",
        "early": "40.000",
        "tail": "30.000",
        "lost": "0.000",
    }
    # 0–40 s and 30–60 s overlap: the suite judged the 60 s of the run once, not 90 s.
    assert suite.get("time") == "60.000"


def test_live_evaluation_stops_at_now() -> None:
    verdict = run(
        f'[[rule]]\nscope = "{READ}"\nphase = "last 10s"\nexpr = "p(99) < 100"\n', now=T0 + 25
    )
    assert verdict.results[0].status == "pass"
