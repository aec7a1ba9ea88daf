"""`guardrails check DIR` judges a run by the rule file the run recorded, unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.commands.guardrails import command as guardrails_command

RULES = '[[rule]]\nname = "{name}"\nsource = "audit"\nexpr = "lost_count {op} 0"\n'


def run_dir(tmp_path: Path, recorded: Path | None) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / "audit.json").write_text(json.dumps({"lost_count": 0}))
    run = {"profile": "smoke"} | ({"guardrails": str(recorded)} if recorded else {})
    (out / "run.json").write_text(json.dumps(run))
    return out


def check(out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        guardrails_command, ["check", str(out), "--format", "json", *args], standalone_mode=False
    )
    assert result.exception is None, result.output
    return result.return_value, result.output


@pytest.fixture
def files(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    monkeypatch.delenv("RECO_GUARDRAILS", raising=False)
    paths = {
        "passing": tmp_path / "passing.toml",
        "breaching": tmp_path / "breaching.toml",
    }
    paths["passing"].write_text(RULES.format(name="nothing lost", op="=="))
    paths["breaching"].write_text(RULES.format(name="something lost", op=">"))
    return paths


def test_the_recorded_file_judges_by_default(tmp_path: Path, files) -> None:
    code, output = check(run_dir(tmp_path, files["breaching"]))
    assert code == 3  # an audit rule: an invariant
    assert f"rules: {files['breaching']} (recorded by the run)" in output
    assert '"something lost"' in output


def test_an_explicit_file_or_the_environment_wins(tmp_path: Path, files, monkeypatch) -> None:
    out = run_dir(tmp_path, files["breaching"])
    code, output = check(out, "--guardrails", str(files["passing"]))
    assert code == 0 and "recorded by the run" not in output
    monkeypatch.setenv("RECO_GUARDRAILS", str(files["passing"]))
    assert check(out)[0] == 0


def test_a_recorded_file_that_is_gone_is_an_error_not_a_silent_default(
    tmp_path: Path, files
) -> None:
    gone = tmp_path / "gone.toml"
    code, output = check(run_dir(tmp_path, gone))
    assert code == 2
    assert f"the run was judged by {gone}, which is gone: pass --guardrails FILE" in output


def test_a_run_that_recorded_nothing_gets_the_default(tmp_path: Path, files) -> None:
    code, output = check(run_dir(tmp_path, None))
    assert "recorded by the run" not in output
    assert json.loads(output)["guardrails"].endswith("guardrails.toml")


def test_a_directory_without_data_for_any_rule_is_an_error_not_a_pass(tmp_path, files):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check(empty, "--guardrails", str(files["passing"]))[0] == 2


def test_the_parent_of_run_directories_names_them_instead_of_passing(tmp_path, files):
    nightly = tmp_path / "nightly"
    (nightly / "db-down").mkdir(parents=True)
    (nightly / "db-down" / "audit.json").write_text(json.dumps({"lost_count": 5}))
    result = CliRunner().invoke(
        guardrails_command,
        ["check", str(nightly), "--guardrails", str(files["passing"])],
        standalone_mode=False,
    )
    assert result.return_value == 2
    assert "run directories below it: db-down" in result.stderr
    # The run itself is judged: its loss is an invariant violation.
    assert check(nightly / "db-down", "--guardrails", str(files["passing"]))[0] == 3


def test_another_tools_junit_is_kept_and_the_verdict_goes_beside_it(tmp_path, files) -> None:
    out = run_dir(tmp_path, files["passing"])
    theirs = '<testsuite name="schemathesis" tests="3" failures="1"/>\n'
    (out / "junit.xml").write_text(theirs)
    code, _ = check(out)
    assert code == 0
    assert (out / "junit.xml").read_text() == theirs
    assert 'name="guardrails"' in (out / "guardrails-junit.xml").read_text()
    check(out)  # and a verdict of ours is simply rewritten
    assert (out / "junit.xml").read_text() == theirs


def test_a_verdicts_own_junit_is_rewritten_in_place(tmp_path, files) -> None:
    out = run_dir(tmp_path, files["passing"])
    check(out)
    check(out)
    assert 'name="guardrails"' in (out / "junit.xml").read_text()
    assert not (out / "guardrails-junit.xml").exists()


def test_an_unknown_profile_is_an_error_not_a_smaller_rule_set(tmp_path, files) -> None:
    out = run_dir(tmp_path, files["passing"])
    code, output = check(out, "--profile", "stedy")
    assert code == 2
    assert "unknown profile 'stedy'" in output
    assert check(out, "--profile", "steady")[0] == 0


def test_the_parent_of_runs_is_an_error_under_the_shipped_required_rules(tmp_path) -> None:
    below = tmp_path / "runs" / "db-down"
    below.mkdir(parents=True)
    (below / "audit.json").write_text(json.dumps({"lost_count": 0}))
    shipped = Path(__file__).resolve().parents[2] / "chaos" / "guardrails.toml"
    code, output = check(tmp_path / "runs", "--guardrails", str(shipped))
    assert code == 2
    assert "no results in" in output and "run directories below it: db-down" in output
