"""One guardrail engine for load, server, benchmark, contract and audit results.

Use ``load_rules(path)`` (raises GuardrailError naming file, line and reason), then
``evaluate(ruleset, {"audit": {"lost": 0}, ...})`` or ``check_dir(results_dir, ruleset)``;
the Verdict has ``exit_code``, ``breaches``, ``to_json()``, ``to_junit()`` and ``table()``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET  # noqa: S405 - reads a JUnit file in the run's directory
from pathlib import Path

from harness.guardrails.engine import evaluate, resolve_phase, run_extent
from harness.guardrails.expr import Expr, ExprError, parse_expr
from harness.guardrails.results import (
    ERRORS,
    JUDGED_WITHOUT,
    Results,
    load_results,
    recorded_rules,
    rules_record,
)
from harness.guardrails.rules import (
    GuardrailError,
    Rule,
    RuleSet,
    Slo,
    load_rules,
    parse_duration,
    parse_rules,
)
from harness.guardrails.verdict import (
    EXIT_BREACH,
    EXIT_INVARIANT,
    EXIT_OK,
    EXIT_USAGE,
    Result,
    Verdict,
)

DEFAULT_FILE = "guardrails.toml"
ENV_VAR = "RECO_GUARDRAILS"


def default_path() -> Path:
    """The guardrail file: $RECO_GUARDRAILS, else guardrails.toml at the repository root."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / DEFAULT_FILE


def check_dir(results_dir: str | Path, ruleset: RuleSet, profile: str | None = None) -> Verdict:
    """Evaluate a rule set against everything found in a results directory."""
    return check_results(load_results(results_dir), ruleset, profile)


def check_results(results: Results, ruleset: RuleSet, profile: str | None = None) -> Verdict:
    """Evaluate a rule set against results already loaded.

    Rules on sources the run recorded as out of its scope (a plain Locust run has no audit)
    are left out: they are neither skipped nor breached.
    """
    profile = profile or results.profile
    rules = [r for r in ruleset.for_profile(profile) if r.source not in results.without_sources]
    verdict = evaluate(
        ruleset, results.sources, phases=results.phases, profile=profile, rules=rules
    )
    # An interrupted run, or one whose harness failed, is never a pass when judged again.
    verdict.errors.extend(results.errors)
    verdict.interrupted, verdict.aborted = results.interrupted, results.aborted
    return verdict


def unjudged(verdict: Verdict) -> str | None:
    """Why a verdict judged nothing (no rule applies, or none had data), else None."""
    if not verdict.results:
        return f"no rule applies (profile {verdict.profile})"
    if len(verdict.skipped) == len(verdict.results):
        return "no data for any rule"
    return None


def write_verdict(verdict: Verdict, out_dir: str | Path) -> dict[str, Path]:
    """Write verdict.json and junit.xml into ``out_dir``; return their paths.

    Another tool's junit.xml there (Schemathesis' report in a contract run) is kept: the
    verdict's JUnit then goes to guardrails-junit.xml.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    if not _ours(junit):
        junit = out / "guardrails-junit.xml"
    paths = {"json": out / "verdict.json", "junit": junit}
    paths["json"].write_text(verdict.to_json() + "\n", encoding="utf-8")
    paths["junit"].write_text(verdict.to_junit(), encoding="utf-8")
    return paths


def _ours(junit: Path) -> bool:
    """May the verdict be written to this path: absent, or a verdict written before?"""
    try:
        root = ET.parse(junit).getroot()  # noqa: S314 - a file in the run's own directory
    except FileNotFoundError:
        return True
    except (OSError, ET.ParseError):
        return False
    return root.tag == "testsuite" and root.get("name") == "guardrails"


__all__ = [
    "ERRORS",
    "EXIT_BREACH",
    "EXIT_INVARIANT",
    "EXIT_OK",
    "EXIT_USAGE",
    "JUDGED_WITHOUT",
    "Expr",
    "ExprError",
    "GuardrailError",
    "Result",
    "Results",
    "Rule",
    "RuleSet",
    "Slo",
    "Verdict",
    "check_dir",
    "check_results",
    "default_path",
    "evaluate",
    "load_results",
    "load_rules",
    "recorded_rules",
    "rules_record",
    "parse_duration",
    "parse_expr",
    "parse_rules",
    "resolve_phase",
    "run_extent",
    "unjudged",
    "write_verdict",
]
