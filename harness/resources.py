"""Memory and open descriptors of the stack's processes over a run: a leak shows as growth.

``sample(roots)`` reads each component's process tree from /proc (private anonymous memory,
``RssAnon``, so PostgreSQL's shared buffers are not counted once per backend; open file
descriptors; process count). The pipeline sampler adds these to every ``pipeline.jsonl``
line as ``mem_<name>_mb``, ``fds_<name>`` and ``procs_<name>``; ``summarise`` compares an
early and a late window of those lines and gives ``resources.json``, the guardrail source
``resources`` (top-level values are the worst of the gated components, ``scopes`` hold each
component).
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
# Without named early/late phases, compare the first and the last quarter of the plateau.
WINDOW_SHARE = 0.25

Window = tuple[float, float]


def stack_roots(stack: Any) -> dict[str, Callable[[], int | None]]:
    """Root pid getters of a stack's components, read live (a restarted one is followed)."""

    def getter(name: str) -> Callable[[], int | None]:
        return lambda: stack.state.get("components", {}).get(name, {}).get("pid")

    return {name: getter(name) for name in (*GATED, "postgres", "rabbitmq")}


def process_usage(pid: int) -> tuple[int, int] | None:
    """RssAnon in kB and the open descriptor count of one process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]), fds
    return 0, fds  # a kernel thread or a zombie: no user memory


def sample(roots: Mapping[str, Callable[[], int | None]]) -> dict[str, Any]:
    """One reading per component tree: ``mem_<name>_mb``, ``fds_<name>``, ``procs_<name>``."""
    values: dict[str, Any] = {}
    for name, root in roots.items():
        pid = root()
        usages = []
        if pid:
            with contextlib.suppress(OSError):
                usages = [u for u in map(process_usage, tree(pid)) if u is not None]
        if not usages:
            values.update({f"mem_{name}_mb": None, f"fds_{name}": None, f"procs_{name}": 0})
            continue
        values[f"mem_{name}_mb"] = round(sum(kb for kb, _ in usages) / 1024, 2)
        values[f"fds_{name}"] = sum(fds for _, fds in usages)
        values[f"procs_{name}"] = len(usages)
    return values


def component_names(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    """Components that appear in the samples, gated ones first."""
    names = {k[4:-3] for s in samples for k in s if k.startswith("mem_") and k.endswith("_mb")}
    return [n for n in GATED if n in names] + sorted(names - set(GATED))


def windows(phases: Mapping[str, Window], extent: Window | None) -> tuple[Window, Window] | None:
    """The early and late windows: named phases, else the plateau's (or run's) quarters."""
    if "early" in phases and "late" in phases:
        return tuple(phases["early"]), tuple(phases["late"])  # type: ignore[return-value]
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
    return cov / var * 3600


def summarise(samples: Sequence[Mapping[str, Any]], phases: Mapping[str, Window]) -> dict[str, Any]:
    """Per component: memory and descriptors early and late, their growth, the memory slope."""
    samples = [s for s in samples if isinstance(s.get("t"), int | float)]
    extent = (samples[0]["t"], samples[-1]["t"]) if samples else None
    chosen = windows(phases, extent)
    result: dict[str, Any] = {"samples": len(samples), "gated": list(GATED), "scopes": {}}
    if chosen is None or not samples:
        return result
    early, late = chosen
    result["windows"] = {"early": list(early), "late": list(late)}
    for name in component_names(samples):
        mem, fds = f"mem_{name}_mb", f"fds_{name}"
        scope: dict[str, Any] = {
            "mem_early_mb": _median(samples, mem, early),
            "mem_late_mb": _median(samples, mem, late),
            "fds_early": _median(samples, fds, early),
            "fds_late": _median(samples, fds, late),
            "mem_peak_mb": max((s[mem] for s in samples if s.get(mem) is not None), default=None),
            "mem_slope_mb_per_h": _slope_per_hour(samples, mem, (early[0], late[1])),
        }
        if scope["mem_early_mb"] is not None and scope["mem_late_mb"] is not None:
            scope["mem_growth_mb"] = round(scope["mem_late_mb"] - scope["mem_early_mb"], 2)
        if scope["fds_early"] is not None and scope["fds_late"] is not None:
            scope["fd_growth"] = scope["fds_late"] - scope["fds_early"]
        if scope["mem_slope_mb_per_h"] is not None:
            scope["mem_slope_mb_per_h"] = round(scope["mem_slope_mb_per_h"], 2)
        result["scopes"][name] = scope
    gated = [result["scopes"][n] for n in GATED if n in result["scopes"]]
    for key in ("mem_growth_mb", "fd_growth"):
        values = [s[key] for s in gated if s.get(key) is not None]
        if values:
            result[key] = max(values)
    return result
