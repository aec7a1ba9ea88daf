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
from harness.contract.paths import ALLOWLIST_PATH
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
