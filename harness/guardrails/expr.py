"""k6-style threshold expressions: ``p(99) < 200``, ``fail_ratio <= 0.1%``, ``lost == 0``."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
# Metrics measured in time; their thresholds may carry an `ms` or `s` unit. `shed_p(N)` is a
# percentile of the shed (429/503) responses alone.
LATENCY = frozenset({"p", "shed_p", "avg", "min", "max"})
ALIASES = {
    "med": ("p", 50.0),
    "median": ("p", 50.0),
    "mean": ("avg", None),
    "rate": ("fail_ratio", None),
}
# What the load sources (Locust timeline, server histograms) can compute.
TIMED_METRICS = frozenset(
    {
        "p", "shed_p", "avg", "min", "max", "count", "rps", "fail_count", "fail_ratio",
        "shed_count", "shed_ratio", "error_ratio", "offered_rps", "throughput_ratio", "saturated_s",
        "knee_rps", "knee_users", "error_500_count", "retry_count", "retry_refused_count",
        "retry_ratio",
    }
)  # fmt: skip
# Only the server sees statuses: a client's failures include its timeouts and resets.
SERVER_ONLY_METRICS = frozenset({"error_500_count"})
# Metrics a Prometheus histogram can answer (no exact min/max, no pacing knowledge).
SERVER_METRICS = frozenset(
    {"p", "shed_p", "avg", "count", "rps", "fail_count", "fail_ratio", "shed_count", "shed_ratio",
     "error_ratio", "error_500_count"}
)  # fmt: skip

_EXPR = re.compile(
    r"""^\s*
    (?P<metric>(?P<family>shed_p|p)\(\s*(?P<pct>\d+(?:\.\d+)?)\s*\)|[A-Za-z_][A-Za-z0-9_.\-]*)
    \s*(?P<op><=|>=|==|!=|<|>)\s*
    (?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
    \s*(?P<unit>ms|s|%)?\s*$""",
    re.VERBOSE,
)


class ExprError(ValueError):
    """An expression that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class Expr:
    """One comparison of a metric against a threshold."""

    text: str
    metric: str
    op: str
    number: float
    unit: str | None = None
    percentile: float | None = None

    @property
    def label(self) -> str:
        """The metric as written in reports, e.g. ``p(99)``."""
        if self.metric in ("p", "shed_p"):
            return f"{self.metric}({self.percentile:g})"
        return self.metric

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY

    def threshold(self, time_unit_s: float | None) -> float:
        """The number to compare with, converted into the source's unit."""
        if self.unit == "%":
            return self.number / 100.0
        if self.unit in ("ms", "s"):
            seconds = self.number / 1000.0 if self.unit == "ms" else self.number
            return seconds / (time_unit_s or 1.0)
        return self.number

    def holds(self, observed: float, time_unit_s: float | None = None) -> bool:
        """Tell whether ``observed`` satisfies the comparison (NaN never does)."""
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return False
        return bool(OPS[self.op](observed, self.threshold(time_unit_s)))

    def expected(self, time_unit_s: float | None = None) -> str:
        """The requirement as text, in the source's unit (``< 200 ms``)."""
        value = self.threshold(time_unit_s)
        suffix = " ms" if self.is_latency and time_unit_s == 0.001 else ""
        return f"{self.op} {value:g}{suffix}"


def parse_expr(text: str, timed: bool = True) -> Expr:
    """Parse one expression; ``timed`` sources accept only the load metrics."""
    if not isinstance(text, str):
        raise ExprError(f"expression must be a string, got {type(text).__name__}")
    match = _EXPR.match(text)
    if not match:
        raise ExprError(
            f"cannot parse {text!r}: expected '<metric> <op> <number>[ms|s|%]', "
            "e.g. 'p(99) < 200' or 'fail_ratio <= 0.1%'"
        )
    metric = match["metric"]
    percentile = float(match["pct"]) if match["pct"] is not None else None
    if percentile is not None:
        metric = match["family"]
        if not 0 < percentile <= 100:
            raise ExprError(f"percentile in {text!r} must be in (0, 100]")
    elif metric in ALIASES and timed:
        metric, percentile = ALIASES[metric]
    unit = match["unit"]
    if timed and metric not in TIMED_METRICS:
        known = "p(N), shed_p(N), avg, med, min, max, " + ", ".join(sorted(TIMED_METRICS - LATENCY))
        raise ExprError(f"unknown metric {metric!r} in {text!r}; load metrics are: {known}")
    if unit in ("ms", "s") and timed and metric not in LATENCY:
        raise ExprError(f"unit {unit!r} in {text!r} only applies to latency metrics")
    return Expr(text.strip(), metric, match["op"], float(match["num"]), unit, percentile)
