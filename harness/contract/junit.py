"""Make Schemathesis' junit.xml agree with the verdict of `reco-harness contract`.

Schemathesis writes one test case per operation and fails it only for a check's failure: a run
that fails through a `[warnings] fail-on` warning, or that left no usable report, would read as
green to a CI system that reads only JUnit files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - Schemathesis' report in the run's own directory
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.contract.paths import CONFIG_PATH
from harness.guardrails.verdict import xml_text

OUTCOMES = {"failures": "failure", "errors": "error", "skipped": "skipped"}
# Added test cases judge what other test cases ran (or that nothing ran): no time of their own.
NO_TIME = f"{0:.6f}"


def fail_warnings(path: Path, fired: Mapping[str, Sequence[str]]) -> None:
    """Add one failing test case per fired fail-on warning, naming the operations it fired on."""
    cases = [_case(f"warning: {kind}", "failure", "warning", *_warning_text(kind, labels))
             for kind, labels in sorted(fired.items())]  # fmt: skip
    if cases:
        _append(path, cases)


def fail_if_green(path: Path, reason: str) -> None:
    """Add an error test case with ``reason`` unless some test case already failed."""
    root = _read(path)
    if root is None or not any(_failed(case) for case in root.iter("testcase")):
        _append(path, [_case("contract run", "error", "harness", reason, reason)])


def _warning_text(kind: str, labels: Sequence[str]) -> tuple[str, str]:
    """(message, text) of a fired fail-on warning."""
    noun = "operation" if len(labels) == 1 else "operations"
    message = f"Schemathesis warning {kind} fired on {len(labels)} {noun}: {', '.join(labels)}"
    text = f"{message}\n{CONFIG_PATH.name} lists {kind} under [warnings] fail-on: the run fails."
    return message, text


def _case(name: str, kind: str, why: str, message: str, text: str) -> ET.Element:
    case = ET.Element("testcase", name=xml_text(name), time=NO_TIME)
    ET.SubElement(case, kind, type=why, message=xml_text(message)).text = xml_text(text)
    return case


def _failed(case: ET.Element) -> bool:
    return case.find("failure") is not None or case.find("error") is not None


def _read(path: Path) -> ET.Element | None:
    """The JUnit document, or None when Schemathesis left none or an unreadable one."""
    try:
        return ET.parse(path).getroot()  # noqa: S314 - Schemathesis' report in the run's directory
    except (OSError, ET.ParseError):
        return None


def _append(path: Path, cases: list[ET.Element]) -> None:
    """Add test cases to the first test suite (a new document if none) and recount every total."""
    root = _read(path)
    if root is None:  # a killed run: its verdict still needs a file a CI can read
        root = ET.Element("testsuites", time=NO_TIME)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        suite = ET.SubElement(root, "testsuite", name="schemathesis", time=NO_TIME)
    suite.extend(cases)
    _recount(root)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n{body}\n', encoding="utf-8")


def _recount(root: ET.Element) -> None:
    """Set tests, failures, errors and skipped on each suite and the root, as Schemathesis counts.

    Schemathesis counts test cases: one with several failures counts once.
    """
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = dict.fromkeys(["tests", *OUTCOMES], 0)
    for suite in suites:
        cases = suite.findall("testcase")
        counts = {"tests": len(cases)}
        for key, kind in OUTCOMES.items():
            counts[key] = sum(case.find(kind) is not None for case in cases)
        suite.attrib.update({key: str(n) for key, n in counts.items()})
        totals = {key: totals[key] + counts[key] for key in totals}
    root.attrib.update({key: str(n) for key, n in totals.items()})
