"""Memory, descriptors, threads and connections of the stack over a run: a leak shows as growth.

``sample(roots)`` reads each component's process tree from /proc: private anonymous memory
(``RssAnon``, so PostgreSQL's shared buffers are not counted once per backend), open file
descriptors, threads and processes. The pipeline sampler adds these to every
``pipeline.jsonl`` line (``mem_<name>_mb``, ``fds_<name>``, ``threads_<name>``,
``procs_<name>``) with each component's PostgreSQL sessions (``pg_conns_<name>``) and the
outbox's dead tuples and size. ``summarise`` compares an early and a late window of those
lines into ``resources.json``, the guardrail source ``resources``: top-level values are the
worst of the gated components (ours), ``scopes`` hold every component and the outbox.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.bench.cpu import tree

# Our own processes: their growth is gated. PostgreSQL and RabbitMQ are reported only
# (their memory follows connections, caches and queue depth, not our code).
GATED = ("api", "relay", "consumer")
OTHERS = ("postgres", "rabbitmq")
# Without named early/late phases, compare the first and the last quarter of the plateau.
WINDOW_SHARE = 0.25
# Per component: pipeline.jsonl key pattern, then the names of its early and late medians
# and of their difference in resources.json.
SERIES = (
    ("mem_{}_mb", "mem_early_mb", "mem_late_mb", "mem_growth_mb"),
    ("fds_{}", "fds_early", "fds_late", "fd_growth"),
    ("threads_{}", "threads_early", "threads_late", "thread_growth"),
    ("pg_conns_{}", "pg_conns_early", "pg_conns_late", "pg_conn_growth"),
)
OUTBOX_SERIES = (
    ("outbox_dead_tuples", "dead_tuples_early", "dead_tuples_late", "dead_tuples_growth"),
    ("outbox_mb", "size_mb_early", "size_mb_late", "size_mb_growth"),
)

Window = tuple[float, float]


def stack_roots(stack: Any) -> dict[str, Callable[[], int | None]]:
    """Root pid getters of a stack's components, read live (a restarted one is followed)."""

    def getter(name: str) -> Callable[[], int | None]:
        return lambda: stack.state.get("components", {}).get(name, {}).get("pid")

    return {name: getter(name) for name in (*GATED, *OTHERS)}


def process_usage(pid: int) -> tuple[int, int, int] | None:
    """RssAnon in kB, open descriptors and threads of one process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    anon = fields.get("RssAnon", "0 kB").split()[0]  # absent for a zombie: no user memory
    return int(anon), fds, int(fields.get("Threads", "1").strip() or 1)


def sample(roots: Mapping[str, Callable[[], int | None]]) -> dict[str, Any]:
    """One reading per component tree: memory, descriptors, threads and process count."""
    values: dict[str, Any] = {}
    for name, root in roots.items():
        pid = root()
        usages: list[tuple[int, int, int]] = []
        if pid:
            with contextlib.suppress(OSError):
                usages = [u for u in map(process_usage, tree(pid)) if u is not None]
        if not usages:
            values.update({f"mem_{name}_mb": None, f"fds_{name}": None, f"threads_{name}": None})
            values[f"procs_{name}"] = 0
            continue
        values[f"mem_{name}_mb"] = round(sum(u[0] for u in usages) / 1024, 2)
        values[f"fds_{name}"] = sum(u[1] for u in usages)
        values[f"threads_{name}"] = sum(u[2] for u in usages)
        values[f"procs_{name}"] = len(usages)
    return values


def component_names(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    """Components that appear in the samples, gated ones first."""
    names = {k[4:-3] for s in samples for k in s if k.startswith("mem_") and k.endswith("_mb")}
    names |= {k[9:] for s in samples for k in s if k.startswith("pg_conns_")}
    return [n for n in GATED if n in names] + sorted(names - set(GATED))


def windows(phases: Mapping[str, Window], extent: Window | None) -> tuple[Window, Window] | None:
    """The early and late windows: named phases, else the plateau's (or run's) quarters."""
    if "early" in phases and "late" in phases:
        early, late = phases["early"], phases["late"]
        return (early[0], early[1]), (late[0], late[1])
    span = phases.get("plateau") or phases.get("all") or extent
    if span is None or span[1] <= span[0]:
        return None
    length = (span[1] - span[0]) * WINDOW_SHARE
    return (span[0], span[0] + length), (span[1] - length, span[1])


def _points(samples: Sequence[Mapping[str, Any]], key: str, window: Window) -> list:
    """(t, value) of ``key`` inside ``window``, skipping samples without a value."""
    return [
        (s["t"], s[key])
        for s in samples
        if window[0] <= s["t"] <= window[1] and s.get(key) is not None
    ]


def _median(samples: Sequence[Mapping[str, Any]], key: str, window: Window) -> float | None:
    values = [v for _, v in _points(samples, key, window)]
    return statistics.median(values) if values else None


def _slope_per_hour(samples: Sequence[Mapping[str, Any]], key: str, span: Window) -> float | None:
    """Least-squares slope of ``key`` over ``span``, per hour (a steady leak's rate)."""
    points = _points(samples, key, span)
    if len(points) < 3:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(cov / var * 3600, 2)


def _compare(
    samples: Sequence[Mapping[str, Any]],
    names: tuple[str, str, str, str],
    early: Window,
    late: Window,
) -> dict[str, Any]:
    """Early and late medians of one series and their difference (None without data)."""
    key, early_name, late_name, growth_name = names
    first, last = _median(samples, key, early), _median(samples, key, late)
    growth = None if first is None or last is None else round(last - first, 2)
    return {early_name: first, late_name: last, growth_name: growth}


def _peak(samples: Sequence[Mapping[str, Any]], key: str) -> float | None:
    return max((s[key] for s in samples if s.get(key) is not None), default=None)


def summarise(samples: Sequence[Mapping[str, Any]], phases: Mapping[str, Window]) -> dict[str, Any]:
    """Per component and for the outbox: early and late medians, growth, the memory slope.

    The memory slope is fitted from the end of the early window (the warm-up) to the end
    of the late one: the rate a steady leak would show.
    """
    samples = [s for s in samples if isinstance(s.get("t"), int | float)]
    extent = (samples[0]["t"], samples[-1]["t"]) if samples else None
    chosen = windows(phases, extent)
    result: dict[str, Any] = {"samples": len(samples), "gated": list(GATED), "scopes": {}}
    if chosen is None or not samples:
        return result
    early, late = chosen
    result["windows"] = {"early": list(early), "late": list(late)}
    for name in component_names(samples):
        scope: dict[str, Any] = {}
        for pattern, early_name, late_name, growth_name in SERIES:
            key = pattern.format(name)
            if _peak(samples, key) is not None:
                names = (key, early_name, late_name, growth_name)
                scope.update(_compare(samples, names, early, late))
        memory = f"mem_{name}_mb"
        peak = _peak(samples, memory)
        if peak is not None:
            scope["mem_peak_mb"] = peak
            scope["mem_slope_mb_per_h"] = _slope_per_hour(samples, memory, (early[1], late[1]))
        result["scopes"][name] = scope
    outbox: dict[str, Any] = {}
    for series in OUTBOX_SERIES:
        peak = _peak(samples, series[0])
        if peak is not None:
            outbox.update(_compare(samples, series, early, late))
            outbox[series[1].replace("_early", "_peak")] = peak
    if outbox:
        result["scopes"]["outbox"] = outbox
    gated = [result["scopes"][n] for n in GATED if n in result["scopes"]]
    for key in ("mem_growth_mb", "mem_slope_mb_per_h", *(row[3] for row in SERIES[1:])):
        values = [s[key] for s in gated if s.get(key) is not None]
        if values:
            result[key] = max(values)
    return result
