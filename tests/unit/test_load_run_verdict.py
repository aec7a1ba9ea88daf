"""`load run` writes the verdict a later `guardrails check` on its directory agrees with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.commands import load as load_command
from harness.guardrails.timeline import Timeline

T0 = 1_800_000_000


def _timeline(seconds: int = 10) -> Timeline:
    tl = Timeline()
    for s in range(seconds):
        tl.set_meta(T0 + s, users=2, offered_rps=4.0)
        for _ in range(4):
            tl.record(T0 + s, "GET /v1/users/[id]/recommendations", 12.0, "ok")
    return tl


@pytest.fixture
def fake_locust(monkeypatch):
    """Locust replaced by what it leaves in the run directory; ``summary`` adds to its summary."""
    summary: dict = {}

    def run_locust(argv, run_dir: Path, _timeout_s):
        _timeline().write_jsonl(run_dir / "timeline.jsonl")
        (run_dir / "phases.json").write_text(json.dumps({"all": [T0, T0 + 10]}))
        record = {"profile": "smoke", "aborted": None, "interrupted": None, **summary}
        (run_dir / "summary.json").write_text(json.dumps(record))
        return summary.pop("_rc", 0)

    monkeypatch.setattr(load_command, "_run_locust", run_locust)
    monkeypatch.setattr(load_command, "write_report", lambda run_dir: run_dir / "x.html")
    return summary


def _load_run(tmp_path: Path, rules: Path) -> int:
    argv = ["load", "run", "--url", "http://127.0.0.1:1", "--no-audit", "-t", "10s"]
    return main([*argv, "--out", str(tmp_path / "run"), "--guardrails", str(rules)])


def _check(tmp_path: Path) -> int:
    return main(["guardrails", "check", str(tmp_path / "run"), "--out", str(tmp_path / "again")])


def test_a_rule_file_with_no_applicable_rule_is_no_verdict_as_in_guardrails_check(
    fake_locust, tmp_path, capsys
):
    rules = tmp_path / "soak-only.toml"
    rules.write_text('[[rule]]\nexpr = "fail_ratio < 1%"\nprofiles = ["soak"]\n')
    assert _load_run(tmp_path, rules) == 2
    out = capsys.readouterr().out
    assert "PASS" not in out and "no rule applies (profile smoke)" in out
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    assert verdict["passed"] is False and verdict["exit_code"] == 2
    assert 'errors="1"' in (tmp_path / "run" / "junit.xml").read_text()
    assert _check(tmp_path) == 2
    assert "no rule applies" in capsys.readouterr().err


PASSING = '[[rule]]\nname = "errors below 1%"\nexpr = "fail_ratio < 1%"\n'


@pytest.mark.parametrize(
    ("recorded", "reason"),
    [
        ({"interrupted": "SIGINT"}, "interrupted by SIGINT: a partial run is never a pass"),
        ({"errors": ["metrics: 0 of 2 scrapes succeeded"]}, "metrics: 0 of 2 scrapes"),
        ({"errors": ["user code raised 1 exception(s)"]}, "user code raised"),
        ({}, "Locust exited 2"),  # a harness error Locust did not explain in its summary
    ],
)
def test_a_run_without_a_verdict_writes_none_and_guardrails_check_agrees(
    fake_locust, tmp_path, capsys, recorded, reason
):
    fake_locust.update(recorded, _rc=2)
    rules = tmp_path / "rules.toml"
    rules.write_text(PASSING)
    assert _load_run(tmp_path, rules) == 2
    assert reason in capsys.readouterr().out
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    assert (verdict["passed"], verdict["exit_code"], verdict["counts"]["passed"]) == (False, 2, 1)
    junit = (tmp_path / "run" / "junit.xml").read_text()
    assert 'errors="1"' in junit and reason in junit
    assert _check(tmp_path) == 2
    assert reason in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "verdict.json").read_text())
    assert (again["passed"], again["exit_code"]) == (False, 2)


def test_a_breach_in_an_interrupted_run_is_still_a_breach(fake_locust, tmp_path):
    fake_locust.update(interrupted="SIGTERM", _rc=1)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "too strict"\nexpr = "p(99) < 1"\n')
    assert _load_run(tmp_path, rules) == 1
    assert _check(tmp_path) == 1


def test_ctrl_c_during_the_load_ends_with_the_verdict_of_what_ran(
    fake_locust, monkeypatch, tmp_path, capsys
):
    ran = load_command._run_locust

    def interrupted(argv, run_dir, timeout_s):
        ran(argv, run_dir, timeout_s)  # Locust's outputs of the partial run
        raise load_command.LocustInterrupted(2)

    monkeypatch.setattr(load_command, "_run_locust", interrupted)
    fake_locust.update(interrupted="SIGINT")
    rules = tmp_path / "rules.toml"
    rules.write_text(PASSING)
    assert _load_run(tmp_path, rules) == 2
    out = capsys.readouterr().out
    assert "no verdict: interrupted by SIGINT" in out and f"outputs: {tmp_path / 'run'}" in out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["guardrails"] == str(rules)
