"""The report renders whatever a run directory holds, says what is missing, and never clobbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.report import ReportError, load_run, read, render, write_report

T = 1_800_000_000


def _write(root: Path, name: str, value) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    (root / name).write_text(text, encoding="utf-8")


def _verdict(breach: bool = False) -> dict:
    results = [
        {
            "rule": "reads p99",
            "metric": "p(99)",
            "source": "locust",
            "scope": "each",
            "target": "GET /x",
            "phase": "run",
            "expr": "p(99) < 200",
            "expected": "< 200",
            "observed": 12.0,
            "status": "pass",
            "invariant": False,
            "unit": "ms",
            "message": "p(99) = 12 ms, expected < 200 ms",
        }
    ]
    if breach:
        results.append(
            {
                "rule": "nothing lost",
                "metric": "lost_count",
                "source": "audit",
                "scope": "global",
                "target": "global",
                "phase": "run",
                "expr": "lost_count == 0",
                "expected": "== 0",
                "observed": 2.0,
                "status": "breach",
                "invariant": True,
                "unit": "",
                "message": "lost_count = 2, expected == 0",
            }
        )
    return {
        "passed": not breach,
        "exit_code": 3 if breach else 0,
        "guardrails": "g.toml",
        "counts": {"checks": len(results), "breaches": int(breach), "skipped": 0},
        "results": results,
    }


def test_missing_directories_are_errors_and_empty_ones_too_for_the_command(tmp_path):
    with pytest.raises(ReportError, match="no such run directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "db-down").mkdir()
    _write(tmp_path / "db-down", "verdict.json", _verdict())
    with pytest.raises(ReportError, match="run directories below it: db-down"):
        read(tmp_path)
    # A runner's run that recorded nothing still gets a report that says so.
    html = write_report(tmp_path).read_text()
    assert "NO VERDICT" in html and "No timeline.jsonl" in html


def test_a_verdict_alone_renders_and_names_every_missing_input(tmp_path):
    _write(tmp_path, "verdict.json", _verdict())
    out = write_report(tmp_path)
    assert out == tmp_path / "report.html"
    html = out.read_text()
    assert "PASS" in html and "exit 0: pass" in html
    assert "No timeline.jsonl" in html and "No pipeline.jsonl" in html and "No audit.json" in html
    for name in ("timeline.jsonl", "faults.json", "pipeline.jsonl", "audit.json", "run.json"):
        assert f"<code>{name}</code>" in html
    assert "<svg" not in html  # nothing to draw, nothing drawn


def test_a_load_run_without_its_verdict_is_no_verdict_whatever_locust_exited(tmp_path):
    # load run judges the audit after Locust: Locust's 0 alone is not the run's pass.
    _write(tmp_path, "run.json", {"profile": "smoke", "locust_exit_code": 0})
    _write(tmp_path, "audit.json", {"lost_count": 2})
    html = render(load_run(tmp_path))
    assert "NO VERDICT" in html and ">PASS<" not in html


def test_the_report_is_self_contained(tmp_path):
    _write(tmp_path, "verdict.json", _verdict())
    _write(
        tmp_path,
        "timeline.jsonl",
        json.dumps(
            {
                "t": T,
                "endpoints": {
                    "GET /x": {
                        "n": 1,
                        "sum": 5,
                        "min": 5,
                        "max": 5,
                        "hist": {"5": 1},
                        "fail": 0,
                        "shed": 0,
                    }
                },
            }
        ),
    )
    html = write_report(tmp_path).read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}  # only the SVG namespace, never fetched
    assert "Content-Security-Policy" in html


def test_a_failing_run_leads_with_the_breaches_and_the_lost_ids(tmp_path):
    _write(tmp_path, "verdict.json", _verdict(breach=True))
    _write(
        tmp_path,
        "audit.json",
        {
            "lost": ["ev-1", "ev-2"],
            "lost_count": 25,
            "unexpected": [],
            "unexpected_count": 0,
            "duplicated_effects": 3,
            "dlq_depth": 1,
            "expected_dlq": 0,
            "dlq_matches": False,
            "drained": False,
        },
    )
    html = render(load_run(tmp_path))
    banner = html[: html.index("<main>")]
    assert "FAIL" in banner and "exit 3: invariant violated" in banner
    assert "INVARIANT" in banner and "lost_count = 2, expected == 0" in banner
    assert "25 lost event(s)" in banner and "ev-1" in banner and "showing 2 of 25" in banner
    assert "3 duplicated effect(s)" in banner
    audit = html[html.index('id="audit"') :]
    assert audit.count("VIOLATION") >= 4  # lost, duplicated, DLQ mismatch, not drained


def test_bad_files_are_reported_and_the_rest_still_renders(tmp_path):
    _write(tmp_path, "verdict.json", "{not json")
    _write(tmp_path, "faults.json", {"label": "not a list"})
    _write(tmp_path, "phases.json", {"fault": [T, "soon"], "baseline": [T - 5, T]})
    _write(tmp_path, "timeline.jsonl", "garbage\n" + json.dumps({"t": T, "endpoints": {}}))
    _write(tmp_path, "pipeline.jsonl", json.dumps({"t": T, "outbox_backlog": None}) + "\n[1]\n")
    data = load_run(tmp_path)
    assert data.verdict is None and data.faults == [] and list(data.phases) == ["baseline"]
    problems = "\n".join(data.problems)
    for expected in (
        "verdict.json: cannot read",
        "faults.json: expected a list",
        "phase 'fault'",
        "timeline.jsonl: 1 unreadable",
        "pipeline.jsonl: 1 unread",
    ):
        assert expected in problems
    html = render(data)
    assert "Inputs that could not be read" in html and "NO VERDICT" in html
    assert "no samples recorded" in html  # pipeline present but every value null


def test_a_section_that_breaks_is_named_and_the_others_render(tmp_path):
    _write(tmp_path, "verdict.json", {**_verdict(), "counts": "weird"})
    _write(tmp_path, "audit.json", {"violations": 5})
    html = render(load_run(tmp_path))
    assert "The verdict banner failed: AttributeError" in html
    audit = html[html.index('id="audit"') :]
    assert "This section could not be rendered: TypeError" in audit
    assert 'id="verdict"' in html and 'id="metadata"' in html


def test_load_run_metadata_contract_and_benchmark_ratios(tmp_path):
    _write(
        tmp_path,
        "run.json",
        {
            "command": ["reco-harness", "load", "run"],
            "profile": "smoke",
            "git_commit": "abc123",
            "versions": {"python": "3.11.7", "platform": "Linux-x86_64"},
            "start": T,
            "end": T + 30,
        },
    )
    _write(
        tmp_path,
        "contract.json",
        {
            "operations": 6,
            "checks": 1200,
            "failures": 0,
            "allowlisted": 3,
            "passed": True,
            "scopes": {"POST /v1/events": {"checks": 400}},
        },
    )
    _write(
        tmp_path,
        "http.json",
        {
            "ratios": {
                "reco_get": {
                    "median": 0.81,
                    "min": 0.78,
                    "max": 0.85,
                    "target": 0.75,
                    "passed": True,
                },
                "db_vs_hello": {"median": 0.4, "informational": True},
            }
        },
    )
    html = render(load_run(tmp_path))
    assert "Load run: smoke profile" in html
    assert "abc123" in html and "Linux-x86_64" in html and "reco-harness load run" in html
    assert "Contract tests" in html and "1,200" in html and "POST /v1/events" in html
    assert "Benchmark ratios" in html and "reco_get" in html and "≥ 0.75" in html
    assert "INFO" in html  # an informational ratio is not a pass or a fail


def test_the_contract_section_names_checks_run_and_not_run_warnings_and_links(tmp_path):
    _write(
        tmp_path,
        "contract.json",
        {
            "operations": 6,
            "checks": 10,
            "failures": 0,
            "passed": False,
            "errors": 1,
            "check_names": ["not_a_server_error", "status_code_conformance"],
            "not_run": {"object_level_authorization": "needs a second API key <peers>"},
            "warnings": {"missing_auth": ["GET /v1/events/{event_id}"]},
            "links": {"GetEventStatus": 7, "GetUserRecommendations": 0},
        },
    )
    html = render(load_run(tmp_path))
    assert "<code>not_a_server_error</code>, <code>status_code_conformance</code>" in html
    assert "Checks not run" in html and "needs a second API key &lt;peers&gt;" in html
    assert "<code>missing_auth</code>" in html and "GET /v1/events/{event_id}" in html
    assert "GetEventStatus" in html and ">7<" in html and "GetUserRecommendations" in html


def test_a_foreign_report_html_is_never_overwritten(tmp_path):
    _write(tmp_path, "verdict.json", _verdict())
    _write(tmp_path, "report.html", "<html>Locust's own report</html>")
    out = write_report(tmp_path)
    assert out.name == "reco-report.html"
    assert (tmp_path / "report.html").read_text() == "<html>Locust's own report</html>"
    assert write_report(tmp_path, tmp_path / "elsewhere" / "r.html").is_file()
    (tmp_path / "report.html").unlink()
    assert write_report(tmp_path).name == "report.html"
    assert write_report(tmp_path).name == "report.html"  # ours: rewritten in place


def test_command_exit_codes(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "no run files" in capsys.readouterr().err
    _write(tmp_path, "verdict.json", _verdict())
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "x.html")]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "timeline.jsonl" in out  # says what was left out
    assert (tmp_path / "x.html").is_file()


def test_memory_and_descriptor_charts_appear_only_when_sampled(tmp_path):
    rows = [{"t": T + i, "outbox_backlog": 0, "applied": 3} for i in range(5)]
    _write(tmp_path, "pipeline.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    html = render(load_run(tmp_path))
    assert 'id="chart-backlog"' in html
    assert 'id="chart-memory"' not in html and "Memory of the stack" not in html  # not sampled
    for i, row in enumerate(rows):
        row.update(mem_api_mb=120.0 + i, fds_api=70, mem_relay_mb=20.0, fds_relay=12)
    _write(tmp_path, "pipeline.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    html = render(load_run(tmp_path))
    assert 'id="chart-memory"' in html and 'id="chart-fds"' in html
    assert "API (all workers)" in html


def test_resources_and_drift_are_tabled_when_a_load_run_wrote_them(tmp_path):
    html = render(load_run(tmp_path))
    assert 'id="resources"' not in html  # a chaos or bench run: no section, nothing missing
    _write(tmp_path, "resources.json", {
        "gated": ["api"], "windows": {"early": [T, T + 900], "late": [T + 6300, T + 7200]},
        "worker_timeouts": 0, "idle_in_transaction": 0,
        "scopes": {
            "api": {"mem_early_mb": 128.4, "mem_late_mb": 131.0, "mem_growth_mb": 2.6,
                    "mem_slope_mb_per_h": 1.5, "fds_early": 76, "fds_late": 77},
            "rabbitmq": {"mem_early_mb": 90.0, "mem_late_mb": 150.0},
            "outbox": {"dead_tuples_early": 900, "dead_tuples_late": 1100,
                       "dead_tuples_peak": 4000},
        },
    })  # fmt: skip
    _write(tmp_path, "drift.json", {
        "floor_ms": 25.0, "p99_drift": 0.08,
        "scopes": {"POST /v1/events": {"p99_early_ms": 9.5, "p99_late_ms": 11.5,
                                       "p99_drift": 0.08, "requests_early": 54000,
                                       "requests_late": 53900}},
    })  # fmt: skip
    data = load_run(tmp_path)
    assert "resources.json" not in data.missing and data.resources and data.drift
    section = render(data)
    section = section[section.index('id="resources"') :]
    assert "API (all workers)" in section and "RabbitMQ (reported)" in section
    assert "128.4" in section and "76 → 77" in section and "(900 s each)" in section
    assert "900 → 1,100 (4,000)" in section and "Worker timeouts" in section
    assert "POST /v1/events" in section and "8 %" in section
