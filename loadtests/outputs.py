"""Write a run's outputs (timeline, phases, summary, verdict) and judge it; no Locust imports."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from harness import guardrails
from harness.guardrails.timeline import saturation
from loadtests.runstate import RunState

NOTES_LOGGER = "reco.load.notes"  # Locust logs it as "[time] host/WARNING/reco.load.notes: …"


def logged_notes(log_text: str) -> list[str]:
    """The notes a Locust log holds (options ignored, user classes left out), in order."""
    marker = f"/WARNING/{NOTES_LOGGER}: "
    return [line.split(marker, 1)[1] for line in log_text.splitlines() if marker in line]


# Sources only `reco-harness load run` writes (after Locust exits, from the local stack).
LOAD_RUN_SOURCES = frozenset({"pipeline", "resources", "drift", "audit"})


def endpoint_summary(state: RunState, start: float, end: float) -> dict:
    """Per-endpoint totals over [start, end): counts, failures, sheds, rps and percentiles."""
    window = state.timeline.window(start, end)
    out = {}
    for name, cell in [*sorted(window.cells.items()), ("Aggregated", window.total())]:
        h = cell.hist
        out[name] = {
            "count": h.n,
            "failures": cell.fail,
            "sheds": cell.shed,
            # Counted in count; the refused ones were never sent (the retry budget said no).
            "retries": cell.retry,
            "retries_refused": cell.refused,
            "rps": round(h.n / window.duration, 2) if window.seconds else 0.0,
            "p50_ms": h.percentile(50),
            "p95_ms": h.percentile(95),
            "p99_ms": h.percentile(99),
            "max_ms": h.high if h.n else None,
        }
    return out


def merge_phases(path: Path, ours: dict[str, tuple[float, float]], t0: float) -> dict:
    """Our shape's phases plus those already in the file that overlap this run (ours win).

    A reused run directory holds an earlier test's phases: judging this timeline against
    their windows would be wrong, so a phase that ended before ``t0`` is dropped.
    """
    merged: dict = {}
    if path.exists():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}  # a half-written file must not cost us the run's own outputs
        for name, window in earlier.items() if isinstance(earlier, dict) else ():
            try:
                if float(window[1]) > t0:
                    merged[name] = [float(window[0]), float(window[1])]
            except (TypeError, ValueError, IndexError):
                continue
    merged.update({k: list(v) for k, v in ours.items()})
    return merged


def write_outputs(state: RunState, warmup_s: float = 0.0, errors: list[str] | None = None) -> dict:
    """Write timeline.jsonl/.csv, phases.json and summary.json; return the summary.

    ``errors`` (no usable scrape, user code that raised) deny the run a verdict: recorded, so
    that `guardrails check` on the directory says so too.
    """
    out = state.run_dir
    out.mkdir(parents=True, exist_ok=True)
    extent = state.timeline.extent()
    start = math.floor(state.t0) if state.t0 is not None else (extent[0] if extent else time.time())
    end = extent[1] if extent else time.time()
    state.timeline.write_jsonl(out / "timeline.jsonl")
    state.timeline.write_csv(out / "timeline.csv")
    phases = merge_phases(out / "phases.json", state.phases(end), start)
    (out / "phases.json").write_text(json.dumps(phases, indent=2) + "\n", encoding="utf-8")
    # Judge pacing after warm-up and without the last (partial, stopping) second.
    sat = saturation(state.timeline, start + warmup_s, max(start + warmup_s, end - 1))
    summary = {
        "profile": state.profile,
        # What Locust alone cannot record; `load run` on the local stack overrides it in run.json.
        guardrails.JUDGED_WITHOUT: sorted(LOAD_RUN_SOURCES),
        "user_rps": state.user_rps,
        "start": start,
        "end": end,
        "duration_s": round(end - start, 3),
        "endpoints": endpoint_summary(state, start, end),
        # Each Locust process (each worker with --workers) has a budget of its own.
        "retry_budget": state.retry_budget.settings(),
        "saturation": sat,
        "generator_saturated": sat["saturated"],
        "knee": state.shape.knee() if hasattr(state.shape, "knee") else None,
        "aborted": state.aborted,
        "interrupted": state.interrupted,
        guardrails.ERRORS: list(errors or []),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    capacity = getattr(state.shape, "capacity_rps", 0.0)
    if capacity and "overload" in phases:
        data = overload_summary(state, capacity, *phases["overload"])
        (out / "overload.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return summary


def overload_summary(state: RunState, capacity_rps: float, start: float, end: float) -> dict:
    """Goodput at twice the capacity: answers that were neither failures nor sheds, per second.

    The ``overload`` guardrail source: spec 4.2 asks for goodput >= 90 % of capacity, so the
    service sheds the excess instead of collapsing.
    """
    window = state.timeline.window(start, end)
    total, scale = window.total(), state.timeline.scale
    seconds = max(window.duration, 1e-9)
    good = (total.hist.n - total.fail - total.shed) / scale
    return {
        "capacity_rps": capacity_rps,
        "window": [start, end],
        "offered_rps": round(window.offered / seconds, 3),
        "achieved_rps": round(total.hist.n / scale / seconds, 3),
        "goodput_rps": round(good / seconds, 3),
        "goodput_ratio": round(good / seconds / capacity_rps, 4),
        "shed_ratio": round(total.shed / total.hist.n, 4) if total.hist.n else None,
        "fail_ratio": round(total.fail / total.hist.n, 4) if total.hist.n else None,
    }


def saturation_message(summary: dict) -> str | None:
    """A loud line when achieved RPS fell short of offered RPS."""
    sat = summary.get("saturation") or {}
    if not sat.get("saturated"):
        return None
    return (
        f"generator saturated: achieved {sat['achieved_rps']} rps vs offered "
        f"{sat['offered_rps']} rps for {sat['saturated_s']} s ({sat['reason']}); "
        "client-side latency percentiles are suspect, judge p99 on the server's histograms"
    )


def scrape_error(state: RunState) -> str | None:
    """Why the server-side gate has nothing to judge, when /metrics was meant to be scraped."""
    if not state.metrics_url or len(state.scrapes) >= 2:
        return None
    tried = len(state.scrapes) + state.scrape_failures
    return (
        f"metrics: {len(state.scrapes)} of {tried} scrapes of {state.metrics_url} succeeded; "
        "the server-side gate needs two (a window is the difference of the scrapes around "
        "it): no verdict without them (exit 2)"
    )


def exceptions_error(count: int) -> str | None:
    """Why user code that raised leaves the run without a verdict."""
    if not count:
        return None
    return (
        f"user code raised {count} exception(s) (locust_exceptions.csv): a harness error, "
        "not a service verdict"
    )


def judge(state: RunState) -> guardrails.Verdict | None:
    """Evaluate the rule set against the run directory; write verdict.json and junit.xml."""
    if state.ruleset is None:
        return None
    # Locust records the timeline and the server's histograms; the other sources come from
    # `reco-harness load run`, which judges them itself once it has written them.
    verdict = guardrails.check_dir(state.run_dir, state.ruleset, profile=state.profile)
    unjudged = guardrails.unjudged(verdict)
    if unjudged:  # as `guardrails check` on this directory would say: a gate on nothing
        verdict.errors.append(unjudged)
    guardrails.write_verdict(verdict, state.run_dir)
    return verdict
