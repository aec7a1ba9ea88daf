"""`guardrails check` and `guardrails validate`: judge a results directory, lint a rule file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from harness import guardrails
from harness.runmeta import runs_below
from loadtests import shapes


@click.group("guardrails")
def group() -> None:
    """Evaluate guardrail rules (exit 0 pass, 1 breach, 2 error, 3 invariant violated)."""


@group.command("check")
@click.argument("results_dir", type=click.Path(file_okay=False))
@click.option(
    "--guardrails",
    "guardrails_file",
    type=click.Path(dir_okay=False),
    help="guardrail file (default: $RECO_GUARDRAILS, else the one the run recorded in run.json,"
    " else guardrails.toml at the repository root)",
)
@click.option("--profile", help="judge as this profile (default: the one the run recorded)")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="where verdict.json and junit.xml go (default: RESULTS_DIR)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "junit"]),
    default="table",
    show_default=True,
    help="what to print",
)
def check(
    results_dir: str, guardrails_file: str | None, profile: str | None, out: str | None, fmt: str
) -> int:
    """Judge every source found in RESULTS_DIR and report every breach."""
    try:
        path = _rules_for(results_dir, guardrails_file)
        ruleset = guardrails.load_rules(path)
        _known_profile(profile, ruleset)
        results = guardrails.load_results(results_dir)
        verdict = guardrails.check_results(results, ruleset, profile=profile)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    if not results.sources:
        # No results file at all: a wrong directory (or the parent of `chaos run --all`
        # output), whatever the rules' required flags would make of it.
        click.echo(f"error: no results in {results_dir}{runs_below(Path(results_dir))}", err=True)
        return guardrails.EXIT_USAGE
    unjudged = guardrails.unjudged(verdict)
    if unjudged:
        # Every rule lacked its data: a wrong directory (or the parent of `chaos run --all`
        # output) must not pass a gate on nothing.
        click.echo(f"error: {unjudged} in {results_dir}{runs_below(Path(results_dir))}", err=True)
        return guardrails.EXIT_USAGE
    written = guardrails.write_verdict(verdict, out or results_dir)
    if written["junit"].name != "junit.xml":
        click.echo(f"junit: {written['junit']} (junit.xml there is another tool's)", err=True)
    printed = {"table": verdict.table, "json": verdict.to_json, "junit": verdict.to_junit}[fmt]()
    click.echo(printed.rstrip("\n"))
    return verdict.exit_code


def _known_profile(profile: str | None, ruleset: guardrails.RuleSet) -> None:
    """Refuse a profile no rule names and no load profile has: a typo would drop rules."""
    if profile is None:
        return
    known = set(shapes.PROFILES) | {name for rule in ruleset.rules for name in rule.profiles}
    if profile not in known:
        raise guardrails.GuardrailError(
            ruleset.path, None, f"unknown profile {profile!r}; known: {', '.join(sorted(known))}"
        )


def _rules_for(results_dir: str, explicit: str | None) -> Path:
    """--guardrails, else $RECO_GUARDRAILS, else what the run recorded, else the default."""
    if explicit:
        return Path(explicit)
    if not os.environ.get(guardrails.ENV_VAR) and Path(results_dir).is_dir():
        recorded = guardrails.recorded_rules(results_dir)
        if recorded is not None:
            # A chaos run is judged by chaos/guardrails.toml (or its own file): judging it
            # again by the repository's default would not reproduce its verdict.
            click.echo(f"rules: {recorded} (recorded by the run)", err=True)
            return recorded
    return guardrails.default_path()


@group.command("validate")
@click.argument("guardrails_file", type=click.Path(dir_okay=False), required=False)
def validate(guardrails_file: str | None) -> int:
    """Parse a guardrail file and list its rules; exit 2 with file, line and reason if bad."""
    path = Path(guardrails_file) if guardrails_file else guardrails.default_path()
    try:
        ruleset = guardrails.load_rules(path)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    for rule in ruleset.rules:
        exprs = ", ".join(e.text for e in rule.exprs)
        profiles = f" [{', '.join(rule.profiles)}]" if rule.profiles else ""
        where = f"{rule.line or '-':>4}"
        if rule.file:  # inherited through extends: say from where
            where = f"{where}  ({Path(rule.file).name})"
        click.echo(f"{where}  {rule.source}/{rule.scope}/{rule.phase.text}: "
                   f"{exprs}{profiles}")  # fmt: skip
    bases = f", extending {', '.join(ruleset.extends)}" if ruleset.extends else ""
    click.echo(f"{path}: {len(ruleset.rules)} rules OK{bases}")
    return guardrails.EXIT_OK


command = group
