"""What the pipeline did during a load run: outbox age, backlog, queue depth, event-to-feature time.

``summarise(samples, window, e2e)`` reduces the plateau's ``pipeline.jsonl`` lines (one a
second) and the exact event-to-feature latencies read from the inbox (``e2e_latency``)
into ``pipeline.json``, the guardrail source ``pipeline`` (under sustained load: outbox age
p99 < 2 s, event-to-feature p99 < 5 s).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg2

from harness.pipeline_sampler import interval_ms, utc
from harness.resources import Window

# Commit of the event's outbox row to the consumer's commit of its inbox row, for the
# events applied inside the window: exact, unlike per-second percentiles of percentiles.
E2E = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY applied_at - event_created),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY applied_at - event_created),
       max(applied_at - event_created)
FROM inbox
WHERE applied_at BETWEEN %(start)s AND %(end)s AND event_created IS NOT NULL
"""


def window_of(phases: Mapping[str, Window], samples: Sequence[Mapping[str, Any]]) -> Window | None:
    """The plateau (steady load), else the whole run, else the samples' extent."""
    span = phases.get("plateau") or phases.get("all")
    if span is None and samples:
        span = (samples[0]["t"], samples[-1]["t"])
    return None if span is None or span[1] <= span[0] else (float(span[0]), float(span[1]))


def e2e_latency(database_url: str, window: Window, timeout_s: float = 10.0) -> dict[str, Any]:
    """Count, p50, p99 and max (ms) of event-to-feature latency for events applied in ``window``."""
    conn = psycopg2.connect(
        database_url,
        connect_timeout=max(2, int(timeout_s)),
        application_name="reco-harness",
        options=f"-c statement_timeout={int(timeout_s * 1000)}",
    )
    try:
        with conn.cursor() as cur:
            cur.execute(E2E, {"start": utc(window[0]), "end": utc(window[1])})
            count, p50, p99, worst = cur.fetchone()
    finally:
        conn.close()
    return {
        "e2e_count": count,
        "e2e_p50_ms": interval_ms(p50),
        "e2e_p99_ms": interval_ms(p99),
        "e2e_max_ms": interval_ms(worst),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(
    samples: Sequence[Mapping[str, Any]], window: Window | None, e2e: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Outbox age and backlog, queue and DLQ depth over the window's samples, plus ``e2e``."""
    result: dict[str, Any] = {"window": list(window) if window else None, **(e2e or {})}
    if window is None:
        return result
    inside = [s for s in samples if window[0] <= s.get("t", -1) <= window[1]]
    result["samples"] = len(inside)

    def series(key: str) -> list[float]:
        return [s[key] for s in inside if isinstance(s.get(key), int | float)]

    ages, backlog = series("oldest_unpublished_s"), series("outbox_backlog")
    ready, dlq = series("queue_ready"), series("dlq_ready")
    result.update(
        outbox_age_p99_s=percentile(ages, 99),
        outbox_age_max_s=max(ages, default=None),
        backlog_p99=percentile(backlog, 99),
        backlog_max=max(backlog, default=None),
        queue_ready_max=max(ready, default=None),
        dlq_ready_max=max(dlq, default=None),
        unsampled_s=sum(1 for s in inside if s.get("outbox_backlog") is None),
    )
    return result
