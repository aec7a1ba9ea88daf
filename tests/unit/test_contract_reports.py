"""`reco-harness contract`'s reports, judged from a recorded Schemathesis run (no process runs).

fixtures/contract-fail-on holds what `st run` wrote against an app that refuses every valid
event batch (tests/contract/test_command.py, test_valid_requests_mostly_refused_fail_the_run):
its junit.xml and schemathesis.json as written, and one event of its NDJSON stream.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET  # noqa: S405 - parses files these tests wrote
from pathlib import Path

from harness.contract import junit
from harness.contract.allowlist import load
from harness.contract.check_plan import NO_RESULT, plan
from harness.contract.paths import ALLOWLIST_PATH, CONFIG_PATH
from harness.contract.runner import ContractRun, conclude

FIXTURES = Path(__file__).parent / "fixtures" / "contract-fail-on"


def recorded_run(tmp_path: Path) -> ContractRun:
    """A run whose out dir holds the recorded reports."""
    out = tmp_path / "run"
    shutil.copytree(FIXTURES, out)
    return ContractRun(
        url="http://127.0.0.1:9",
        out_dir=out,
        max_examples=5,
        seed=None,
        api_key="dev-key",
        allowlist=load(ALLOWLIST_PATH),
    )


def parse(path: Path) -> tuple[ET.Element, ET.Element]:
    """The document's root and its test suite."""
    root = ET.parse(path).getroot()  # noqa: S314 - written by the test
    suite = root.find("testsuite")
    assert suite is not None
    return root, suite


def counts(element: ET.Element) -> dict[str, str | None]:
    return {key: element.get(key) for key in ("tests", "failures", "errors", "skipped")}


def test_a_fired_fail_on_warning_fails_junit_as_it_fails_the_run(tmp_path: Path) -> None:
    run = recorded_run(tmp_path)
    assert counts(parse(run.junit_path)[1])["failures"] == "0"  # as Schemathesis wrote it
    code, summary = conclude(run, 1, False)
    assert code == 1 and summary["errors"] == 1
    root, suite = parse(run.junit_path)
    failed = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == ["warning: validation_mismatch"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.text is not None
    assert failure.get("message") == (
        "Schemathesis warning validation_mismatch fired on 1 operation: POST /v1/events"
    )
    assert "under [warnings] fail-on" in failure.text
    # Both levels count it; the added case judged no time of its own.
    expected = {"tests": "8", "failures": "1", "errors": "0", "skipped": "0"}
    assert counts(root) == counts(suite) == expected
    assert failed[0].get("time") == "0.000000" and suite.get("time") == "5.171803"


def test_a_passing_run_keeps_schemathesis_junit_as_written(tmp_path: Path) -> None:
    run = recorded_run(tmp_path)
    report = json.loads(run.report_path.read_text())
    report["warnings"]["validation_mismatch"] = []
    run.report_path.write_text(json.dumps(report))
    assert conclude(run, 0, False)[0] == 0
    assert run.junit_path.read_bytes() == (FIXTURES / "junit.xml").read_bytes()


def test_a_run_without_a_report_leaves_an_error_in_junit(tmp_path: Path) -> None:
    run = recorded_run(tmp_path)
    for path in (run.junit_path, run.report_path):
        path.unlink()
    code, summary = conclude(run, -9, True)
    assert code == 2
    root, suite = parse(run.junit_path)
    expected = {"tests": "1", "failures": "0", "errors": "1", "skipped": "0"}
    assert counts(root) == counts(suite) == expected
    error = suite.find("testcase/error")
    assert error is not None and error.get("message") == summary["error"]


def test_added_cases_stay_xml_safe_and_a_red_file_gets_no_second_verdict(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    shutil.copy(FIXTURES / "junit.xml", path)
    junit.fail_warnings(path, {"rate_limited": ["GET /a\x00b<&>", "GET /c"]})
    junit.fail_if_green(path, "not added: a test case already failed")
    root, suite = parse(path)
    assert counts(root) == {"tests": "8", "failures": "1", "errors": "0", "skipped": "0"}
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == (
        "Schemathesis warning rate_limited fired on 2 operations: GET /a\\x00b<&>, GET /c"
    )


def test_checks_that_could_judge_nothing_are_listed_apart_with_the_reason(tmp_path: Path) -> None:
    code, summary = conclude(recorded_run(tmp_path), 1, False)
    # The recorded case has results of 15 checks; with one API key, one had nothing to judge by.
    assert set(summary["not_run"]) == {"object_level_authorization"}
    reason = summary["not_run"]["object_level_authorization"]
    assert "second API key: --peer-api-key ($RECO_CONTRACT_PEER_API_KEY)" in reason
    assert reason.endswith("(this run: one API key, --api-key)")
    assert "max_response_time" in summary["check_names"]
    assert len(summary["check_names"]) == 14
    assert summary["checks"] == summary["scopes"]["GET /healthz"]["checks"] == 14


def test_a_response_time_limit_not_below_the_request_timeout_judges_nothing(
    tmp_path: Path,
) -> None:
    # The shared file without its limit: Schemathesis' default, the request timeout's length.
    config = tmp_path / "schemathesis.toml"
    config.write_text(_without_line(CONFIG_PATH.read_text(), "max_response_time = "))
    _code, summary = conclude(recorded_run(tmp_path), 1, False, config)
    assert set(summary["not_run"]) == {"max_response_time", "object_level_authorization"}
    assert "its limit, 10 s (Schemathesis' default" in summary["not_run"]["max_response_time"]
    assert "request timeout, 10 s" in summary["not_run"]["max_response_time"]
    assert not set(summary["not_run"]) & set(summary["check_names"])
    assert len(summary["check_names"]) == 13


def _without_line(text: str, start: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith(start))


def test_two_peers_and_a_limit_under_the_request_timeout_let_both_checks_judge(
    tmp_path: Path,
) -> None:
    config = tmp_path / "st.toml"
    config.write_text(
        "[checks]\nmax_response_time = 2.5\n\n"
        '[auth.wfc]\npath = "auth.json"\npeers = ["dev", "other"]\n'
    )
    assert plan("dev-key", ["all"], 10.0, config).cannot_judge == {}
    # The same limit at a shorter request timeout holds responses to nothing.
    slow = plan("dev-key", ["all"], 2.0, config).cannot_judge
    assert slow["max_response_time"].startswith("its limit, 2.5 s ([checks] max_response_time")
    no_peers = tmp_path / "identities.toml"
    no_peers.write_text('[auth.wfc]\npath = "auth.json"\n')
    reason = plan("dev-key", ["all"], 10.0, no_peers).cannot_judge["object_level_authorization"]
    assert reason.endswith("in identities.toml (this run: [auth.wfc] without peers)")


def test_a_check_is_not_run_unless_it_was_selected_and_left_results() -> None:
    checks = plan("dev-key", ["not_a_server_error", "object_level_authorization"], 10.0)
    assert checks.called == ("not_a_server_error", "object_level_authorization")
    # Nothing recorded for it: not run. A failure it reported: it judged, whatever the config.
    assert checks.not_run(set(), set()) == {
        "not_a_server_error": NO_RESULT,
        "object_level_authorization": checks.cannot_judge["object_level_authorization"],
    }
    assert checks.not_run(set(checks.called), {"object_level_authorization"}) == {}
