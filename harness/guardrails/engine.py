"""Evaluate every rule against its source, scope and phase; collect every breach."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from harness.guardrails.expr import Expr
from harness.guardrails.rules import Phase, Rule, RuleSet
from harness.guardrails.sources import as_source
from harness.guardrails.verdict import Result, Verdict

Window = tuple[float, float]


def run_extent(sources: Mapping[str, Any], phases: Mapping[str, Window]) -> Window | None:
    """The whole run: the recorded ``all`` phase, else what the timed sources cover."""
    if "all" in phases:
        return phases["all"]
    for name in ("locust", "server"):
        if name in sources:
            extent = as_source(name, sources[name]).extent()
            if extent:
                return extent
    return None


def resolve_phase(
    phase: Phase, extent: Window | None, phases: Mapping[str, Window], warmup_s: float
) -> Window | None:
    """Turn a phase into a [start, end) window, or None when this run did not record it."""
    if phase.kind == "named" and phase.text in phases:
        return phases[phase.text]
    if extent is None:
        return None
    start, end = extent
    if phase.kind == "first":
        return start, min(end, start + phase.seconds)
    if phase.kind == "last":
        return max(start, end - phase.seconds), end
    if phase.text == "all":
        return extent
    if phase.text == "run":
        return (min(start + warmup_s, end), end)
    return None


def evaluate(
    ruleset: RuleSet,
    sources: Mapping[str, Any],
    *,
    phases: Mapping[str, Window] | None = None,
    profile: str | None = None,
    rules: Iterable[Rule] | None = None,
    now: float | None = None,
) -> Verdict:
    """Check every applicable rule and return the verdict (``rules`` narrows the set)."""
    phases = {k: (float(v[0]), float(v[1])) for k, v in (phases or {}).items()}
    extent = run_extent(sources, phases)
    if extent and now is not None:
        extent = (extent[0], min(extent[1], now))
    selected = list(rules) if rules is not None else ruleset.for_profile(profile)
    verdict = Verdict(guardrails=ruleset.path, profile=profile)
    for rule in selected:
        verdict.results.extend(_evaluate_rule(rule, sources, extent, phases, ruleset, profile))
    return verdict


def _evaluate_rule(
    rule: Rule,
    sources: Mapping[str, Any],
    extent: Window | None,
    phases: Mapping[str, Window],
    ruleset: RuleSet,
    profile: str | None = None,
) -> list[Result]:
    # A rule scoped to profiles demands its data only from a run known to be one of them:
    # a results directory without a profile (a contract run) is not a failed soak.
    required = rule.required and (not rule.profiles or profile in rule.profiles)

    def result(expr: Expr, status: str, reason: str = "", **kw: Any) -> Result:
        unit = "ms" if expr.is_latency and rule.timed else ""
        return Result(
            rule=rule.name,
            metric=expr.label,
            source=rule.source,
            scope=rule.scope,
            endpoint=kw.pop("endpoint", None),
            phase=rule.phase.text,
            expr=expr.text,
            expected=expr.expected(kw.pop("time_unit_s", 0.001 if rule.timed else None)),
            observed=kw.pop("observed", None),
            status=status,
            invariant=rule.invariant,
            unit=unit,
            reason=reason,
            line=rule.line,
            window=kw.pop("window", None),
            file=rule.file,
        )

    def missing(reason: str) -> list[Result]:
        status = "breach" if required else "skipped"
        return [result(e, status, reason) for e in rule.exprs]

    if rule.source not in sources:
        return missing(f"no {rule.source} results in this run")
    source = as_source(rule.source, sources[rule.source])
    window: Window | None = None
    if source.timed and source.extent() is None:
        # E.g. a single scrape: no window to take a difference over, so no data at all.
        return missing(f"no {rule.source} data in this run")
    if source.timed:
        source_extent = extent or source.extent()
        window = resolve_phase(rule.phase, source_extent, phases, ruleset.settings.warmup_s)
        if window is None:
            return missing(f"phase {rule.phase.text!r} was not recorded in this run")
    if rule.scope == "each":
        targets: list[str | None] = list(source.endpoints(window))
        if not targets:
            return missing(f"no endpoints with data in {rule.source}")
    elif rule.scope == "global":
        targets = [None]
    else:
        targets = [rule.scope]
    out = []
    unit_s = source.time_unit_s
    for target in targets:
        for expr in rule.exprs:
            observed = source.value(expr, target, window)
            common = {"endpoint": target, "window": window, "time_unit_s": unit_s}
            if observed is None:
                # A named endpoint without data is likely a typo: fail loudly.
                named = target is not None and rule.scope != "each"
                status = "breach" if (named or required) else "skipped"
                where = f" for {target}" if target else ""
                out.append(result(expr, status, f"no data{where} in {rule.source}", **common))
                continue
            if math.isnan(observed):
                # A value that could not be computed: never a pass, and never "no data".
                where = f" for {target}" if target else ""
                out.append(result(expr, "breach", f"not a number{where} in {rule.source}",
                                  **common))  # fmt: skip
                continue
            status = "pass" if expr.holds(observed, unit_s) else "breach"
            out.append(result(expr, status, observed=observed, **common))
    return out
