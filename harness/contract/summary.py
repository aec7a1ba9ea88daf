"""Turn Schemathesis' JSON and NDJSON reports into contract.json for the guardrail engine.

contract.json keys (stable; the guardrail contract source reads the numbers):
  operations    operations tested
  checks        check evaluations run (one per check per response; checks in not_run left out)
  failures      unique failures Schemathesis reported after the allow-list
  allowlisted   failures dropped because an honoured allow-list entry covers them
  passed        true when the run completed with no failures and no errors
plus details: errors (Schemathesis' errors, plus one per fired warning listed under fail-on),
operations_total, check_names (the checks that judged responses), not_run (each check
Schemathesis called that could judge nothing in this configuration, or left no result, with
the reason), failure_details, allowlist, run and
reports, `scopes` (per operation: checks, failures, allowlisted), `warnings` (Schemathesis'
warnings that fired, each with its operations; those listed under `fail-on` in
schemathesis.toml make the run fail), `valid_rates` (per operation and phase, how many valid
generated requests were accepted, and `accepted_share` over all phases) and `links` (per
declared OpenAPI link, how often the stateful phase followed it to a 2xx).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.contract.check_plan import CheckPlan
from harness.contract.config import raw_config
from harness.contract.links import coverage, followed_in_ndjson

STATEFUL = "Stateful tests"  # Schemathesis' label for scenarios that chain operations


class ReportError(RuntimeError):
    """Schemathesis left no usable report (it crashed or never started)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the Schemathesis JSON report {path}: {exc}") from None


def check_counts(ndjson_path: Path) -> dict[str, collections.Counter]:
    """Check results per operation label: Counter of (check name, status)."""
    per_operation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    if not ndjson_path.exists():
        return per_operation
    with ndjson_path.open(encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished.get("recorder", {})
            cases = recorder.get("cases", {})
            scenario = recorder.get("label", "?")
            for case_id, results in recorder.get("checks", {}).items():
                # A scenario of one operation (its label) also holds probes with other methods
                # (unsupported_method); only stateful scenarios mix operations.
                label = scenario if scenario != STATEFUL else _operation_of(cases, case_id)
                for result in results:
                    per_operation[label][(result["name"], result["status"])] += 1
    return per_operation


def _operation_of(cases: dict[str, Any], case_id: str) -> str:
    """The operation of a stateful step: probes count for the case they were derived from."""
    seen = set()
    while case_id in cases and case_id not in seen:
        seen.add(case_id)
        parent = cases[case_id].get("parent_id")
        if parent not in cases:
            break
        case_id = parent
    value = cases.get(case_id, {}).get("value", {})
    if "method" in value and "path" in value:
        return f"{value['method']} {value['path']}"
    return STATEFUL


def dropped_counts(log_path: Path) -> collections.Counter:
    """Allow-listed drops per (entry id, operation) from the hook's log."""
    counts: collections.Counter = collections.Counter()
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                drop = json.loads(line)
                counts[(drop["entry"], drop.get("operation"))] += 1
    return counts


def failing_warnings() -> set[str]:
    """The warnings schemathesis.toml lists under [warnings] fail-on."""
    return set(raw_config().get("warnings", {}).get("fail-on", []))


def fired_fail_on(warnings: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The fired warnings that schemathesis.toml lists under fail-on, with their operations."""
    failing = failing_warnings()
    return {kind: labels for kind, labels in warnings.items() if kind in failing and labels}


def valid_rates(report: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis' per-phase acceptance counts, with the share accepted over all phases."""
    rates = {}
    for label, phases in sorted((report.get("valid_rates") or {}).items()):
        accepted = sum(p.get("accepted", 0) for p in phases.values())
        total = sum(sum(p.values()) for p in phases.values())
        share = round(accepted / total, 3) if total else None
        rates[label] = {"accepted_share": share, "phases": phases}
    return rates


def _judged(
    per_operation: dict[str, collections.Counter], plan: CheckPlan
) -> tuple[dict[str, collections.Counter], dict[str, str]]:
    """The check results of checks that judged something, and why the others did not."""
    recorded = {name for counter in per_operation.values() for name, _ in counter}
    failed = {n for c in per_operation.values() for n, status in c if status == "failure"}
    not_run = plan.not_run(recorded, failed)
    judged = {
        label: collections.Counter({k: n for k, n in counter.items() if k[0] not in not_run})
        for label, counter in per_operation.items()
    }
    return judged, not_run


def summarise(
    report_path: Path,
    ndjson_path: Path,
    dropped_log: Path,
    allowlist_state: dict[str, list[str]],
    run: dict[str, Any],
    plan: CheckPlan,
) -> dict[str, Any]:
    """Build the contract.json document."""
    report = _read_json(report_path)
    per_operation, not_run = _judged(check_counts(ndjson_path), plan)
    dropped = dropped_counts(dropped_log)
    operations = report.get("operations", {})
    test_cases = report.get("test_cases", {})
    failures = int(test_cases.get("unique_failures", 0))
    errors = len(report.get("errors", []))
    allowlisted = sum(dropped.values()) or int(report.get("filtered", 0))
    scopes: dict[str, dict[str, int]] = {}
    for label, counter in sorted(per_operation.items()):
        scopes[label] = {
            "checks": sum(counter.values()),
            "failures": sum(n for (_, status), n in counter.items() if status == "failure"),
            "allowlisted": sum(n for (_, op), n in dropped.items() if op == label),
        }
    matched: collections.Counter = collections.Counter()
    for (entry, _), n in dropped.items():
        matched[entry] += n
    check_names = sorted({name for c in per_operation.values() for name, _ in c})
    warnings = {kind: labels for kind, labels in (report.get("warnings") or {}).items() if labels}
    # A warning listed under fail-on fails the run: count it as an error, so a gate on
    # "failures == 0" and "errors == 0" alone fails it too.
    errors += len(fired_fail_on(warnings))
    return {
        "operations": int(operations.get("tested", 0)),
        "checks": sum(s["checks"] for s in scopes.values()),
        "failures": failures,
        "allowlisted": allowlisted,
        "passed": bool(
            report.get("complete", False)
            and failures == 0
            and errors == 0
            and operations.get("tested", 0) > 0
        ),
        "errors": errors,
        "operations_total": int(operations.get("total", 0)),
        "check_names": check_names,
        "not_run": not_run,
        "failure_details": report.get("failures", []),
        "allowlist": {**allowlist_state, "matched": dict(matched)},
        "run": {**run, "stop_reason": report.get("stop_reason")},
        "scopes": scopes,
        "warnings": warnings,
        "valid_rates": valid_rates(report),
        "links": coverage(followed_in_ndjson(ndjson_path)),
    }
