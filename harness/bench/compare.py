"""Compare pytest-benchmark runs with a saved baseline; judge each by its guardrail threshold.

For every benchmark present in both runs::

    slowdown   = min(current.min / baseline.min, current.median / baseline.median)
    noise      = max(noise_floor, IQR / median of either run), capped at NOISE_CAP
    regression = max(0, slowdown - 1 - noise)

A real slowdown moves every round, the fastest included; a neighbour's load on a shared
2-core machine moves the median but rarely the minimum, so taking the smaller ratio keeps
contention out. The noise term absorbs the spread that is left. Rules in guardrails.toml
(profile ``bench-micro``, scope = benchmark name) bound ``regression`` per benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness import guardrails
from harness.guardrails.sources import NamedSource

PROFILE = "bench-micro"
NOISE_FLOOR = 0.05
NOISE_CAP = 0.5  # beyond this a run is too noisy to judge; a regression must still show


def _stats(bench: Mapping[str, Any]) -> Mapping[str, Any]:
    # Saved files nest the numbers under "stats"; pytest-benchmark's loader flattens them.
    return bench.get("stats", bench)


def _spread(stats: Mapping[str, Any]) -> float:
    median = float(stats.get("median") or 0.0)
    return float(stats.get("iqr") or 0.0) / median if median > 0 else 0.0


def compare_one(
    baseline: Mapping[str, Any], current: Mapping[str, Any], noise_floor: float = NOISE_FLOOR
) -> dict[str, float]:
    """The comparison values of one benchmark (times in microseconds)."""
    base, cur = _stats(baseline), _stats(current)
    ratio_min = float(cur["min"]) / float(base["min"])
    ratio_median = float(cur["median"]) / float(base["median"])
    slowdown = min(ratio_min, ratio_median)
    noise = max(noise_floor, min(NOISE_CAP, max(_spread(base), _spread(cur))))
    return {
        "baseline_min_us": round(float(base["min"]) * 1e6, 4),
        "baseline_median_us": round(float(base["median"]) * 1e6, 4),
        "current_min_us": round(float(cur["min"]) * 1e6, 4),
        "current_median_us": round(float(cur["median"]) * 1e6, 4),
        "ratio_min": round(ratio_min, 4),
        "ratio_median": round(ratio_median, 4),
        "slowdown": round(slowdown, 4),
        "noise": round(noise, 4),
        "regression": round(max(0.0, slowdown - 1.0 - noise), 4),
    }


def compare_runs(
    baseline: Iterable[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
    noise_floor: float = NOISE_FLOOR,
    labels: tuple[str, str] = ("baseline", "current"),
) -> dict[str, Any]:
    """Compare benchmarks by name; the result is a ``benchmark`` source for the guardrails."""
    saved = {b["name"]: b for b in baseline}
    scopes, new = {}, []
    for bench in current:
        name = bench["name"]
        if name in saved:
            scopes[name] = compare_one(saved[name], bench, noise_floor)
        else:
            new.append(name)
    return {
        "baseline": labels[0],
        "current": labels[1],
        "noise_floor": noise_floor,
        "compared": len(scopes),
        "without_baseline": sorted(new),
        "scopes": scopes,
    }


def micro_rules(ruleset: guardrails.RuleSet) -> list[guardrails.Rule]:
    """The per-benchmark threshold rules."""
    return [r for r in ruleset.rules if r.source == "benchmark" and PROFILE in r.profiles]


def judge(report: Mapping[str, Any], ruleset: guardrails.RuleSet) -> guardrails.Verdict:
    """Evaluate the thresholds of the benchmarks that were compared (a subset run is fine)."""
    compared = set(report["scopes"])
    rules = [r for r in micro_rules(ruleset) if r.scope in compared or r.scope == "each"]
    source = NamedSource("benchmark", {"compared": report["compared"]}, report["scopes"])
    return guardrails.evaluate(ruleset, {"benchmark": source}, profile=PROFILE, rules=rules)


def table(report: Mapping[str, Any], verdict: guardrails.Verdict) -> str:
    """One line per benchmark: times, slowdown, noise, regression and its threshold."""
    checks: dict[str, list[guardrails.Result]] = {}
    for result in verdict.results:
        checks.setdefault(result.target, []).append(result)
    header = (
        f"{'BENCHMARK':<40} {'BASE µs':>10} {'NOW µs':>10} {'SLOWDOWN':>8} {'NOISE':>6} "
        f"{'REGRESS':>7}  VERDICT"
    )
    lines = [f"baseline {report['baseline']}  vs  {report['current']}", header]
    for name, values in sorted(report["scopes"].items()):
        results = checks.get(name, [])
        if not results:
            verdict_text = "no threshold"
        elif any(r.status == "breach" for r in results):
            verdict_text = "REGRESSION " + "; ".join(
                f"{r.metric} {r.observed_text()} (allowed {r.expected})"
                for r in results
                if r.status == "breach"
            )
        else:
            verdict_text = "ok (" + ", ".join(r.expr for r in results) + ")"
        lines.append(
            f"{name:<40} {values['baseline_median_us']:>10.2f} {values['current_median_us']:>10.2f}"
            f" {values['slowdown']:>8.3f} {values['noise']:>6.3f} {values['regression']:>7.3f}"
            f"  {verdict_text}"
        )
    for name in report["without_baseline"]:
        lines.append(f"{name:<40} {'-':>10} {'':>10} {'':>8} {'':>6} {'':>7}  no baseline")
    return "\n".join(lines)


def write(report: Mapping[str, Any], verdict: guardrails.Verdict, out: Path) -> Path:
    """Write benchmark-compare.json, verdict.json and junit.xml into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "benchmark-compare.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    guardrails.write_verdict(verdict, out)
    return path


# -- saved runs (pytest-benchmark file storage) ----------------------------------------------
def _machine_id(machine_id: str | None) -> str:
    if machine_id:
        return machine_id
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def saved_runs(storage: Path, machine_id: str | None = None) -> list[Path]:
    """Saved runs ``NNNN_*.json``, oldest first, for one machine id (default: this one)."""
    return sorted((storage / _machine_id(machine_id)).glob("[0-9][0-9][0-9][0-9]_*.json"))


def find_run(storage: Path, ref: str, machine_id: str | None = None) -> Path:
    """A run by file path, number prefix (``0003``), ``latest``, ``previous`` or ``-N``."""
    if Path(ref).is_file():
        return Path(ref)
    runs = saved_runs(storage, machine_id)
    wanted = {"latest": "-1", "previous": "-2"}.get(ref, ref)
    if wanted.startswith("-") and wanted[1:].isdigit():
        if -len(runs) <= int(wanted) < 0:
            return runs[int(wanted)]
    else:
        matches = [p for p in runs if p.name.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
    raise FileNotFoundError(
        f"no single saved benchmark run matches {ref!r} in {storage / _machine_id(machine_id)}"
        f" ({len(runs)} saved; save runs with pytest --benchmark-enable --benchmark-autosave)"
    )


def load_run(path: Path) -> list[dict[str, Any]]:
    """The benchmarks of one saved run or ``--benchmark-json`` file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list)")
    return data["benchmarks"]
