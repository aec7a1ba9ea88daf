"""Report sections about behaviour over time: load charts, pipeline charts, per-endpoint totals."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.report import series as S
from harness.report.charts import (
    OFFERED,
    PALETTE,
    PERCENTILE_STYLES,
    TOTAL,
    Overlay,
    Style,
    lanes_chart,
    line_chart,
)
from harness.report.html import esc, figure, num, pairs, pct, section, table, utc
from harness.report.load import RunData


def overlay(data: RunData) -> Overlay | None:
    """The shared time axis with the run's fault windows and phases, or None without times."""
    domain = S.time_domain(data)
    if domain is None:
        return None
    phases = tuple(
        sorted(
            ((n, s, e) for n, (s, e) in data.phases.items() if n != "all"),
            key=lambda p: (p[1], p[2]),
        )
    )
    return Overlay(domain[0], domain[1], tuple(data.faults), phases)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _styled(series: list[S.Series]) -> list[tuple[S.Series, Style]]:
    return [(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]


def load_section(data: RunData, ov: Overlay | None) -> str:
    """Run timeline, throughput, error ratio and latency per endpoint."""
    figures = []
    if ov and (ov.phases or ov.faults):
        lanes = lanes_chart(ov, "chart-lanes", "Phases and fault windows")
        figures.append(figure(lanes, "When each phase ran and each fault was applied (hatched)."))
    timeline = data.timeline
    if not timeline or not ov or not timeline.extent():
        figures.append(
            '<p class="missing">No timeline.jsonl: per-second RPS, error and '
            "latency charts are not available.</p>"
        )
        return section("load", "Load over time", _how_to_read(ov) + "".join(figures))
    names = S.endpoints(timeline)
    w = S.bucket_seconds(timeline)
    per = "per second" if w == 1 else f"averaged over {w}-second windows (a long run)"
    lines = [(S.rps(timeline, None, w), TOTAL)] + _styled([S.rps(timeline, n, w) for n in names])
    offered = S.offered(timeline, w)
    if offered:
        lines.append((offered, OFFERED))
    rps_chart = line_chart(ov, "chart-rps", "Requests per second", lines, "requests/s", min_top=5)
    figures.append(
        figure(
            rps_chart,
            f"Completed requests per second, {per}: all endpoints (thick) and each endpoint; "
            "the grey dashed line is the load the pacing offered.",
        )
    )
    errors = _styled([S.error_ratio(timeline, n, w) for n in names])
    figures.append(
        figure(
            line_chart(ov, "chart-errors", "Error ratio", errors, "errors + sheds", percent=True),
            "Failed plus shed (429/503) requests as a share of all requests per endpoint, "
            f"{per}; gaps are seconds without requests.",
        )
    )
    seen: set[str] = set()
    for name in names:
        lat = [(S.latency(timeline, name, p, w), PERCENTILE_STYLES[f"p{p}"]) for p in S.PERCENTILES]
        chart_id, title = f"chart-latency-{slug(name)}", f"Latency: {name}"
        if chart_id in seen:  # ids must stay unique when two names slug alike
            chart_id += f"-{len(seen)}"
        seen.add(chart_id)
        figures.append(
            figure(
                line_chart(ov, chart_id, title, lat, "ms (log scale)", log=True),
                f"<strong>{esc(name)}</strong>: p50 (solid), p95 (dashed) and p99 (dotted) "
                f"latency {per}, from the recorded histograms; logarithmic scale.",
            )
        )
    return section("load", "Load over time", _how_to_read(ov) + "".join(figures))


def _how_to_read(ov: Overlay | None) -> str:
    if ov is None:
        return ""
    return (
        f'<p class="note">Time runs from the start of the run ({utc(ov.t0)}). Hatched areas are '
        "fault windows, labelled above each plot; dotted vertical lines are phase boundaries, "
        "named at each phase's start.</p>"
    )


@dataclass(frozen=True)
class PipelineChart:
    chart_id: str
    title: str
    unit: str
    keys: tuple[tuple[str, str], ...]  # (pipeline.jsonl field, line label)
    caption: str
    log: bool = False
    min_top: float = 1.0
    agg: str = "max"  # how a long run's samples are thinned: keep spikes, average rates
    optional: bool = False  # left out silently when the run did not sample it


PIPELINE_CHARTS = (
    PipelineChart(
        "chart-backlog", "Outbox backlog and queues", "messages",
        (("outbox_backlog", "outbox backlog"), ("queue_ready", "queue ready"),
         ("dlq_ready", "dead-letter queue")),
        "Unpublished outbox rows, and messages ready in the consumer queue and its dead-letter "
        "queue.", min_top=5,
    ),
    PipelineChart(
        "chart-oldest", "Oldest unpublished outbox row", "age (s)",
        (("oldest_unpublished_s", "oldest unpublished"),),
        "Age of the oldest outbox row not yet published: how far the relay lags.",
    ),
    PipelineChart(
        "chart-applied", "Events applied by the consumer", "events per sample",
        (("applied", "applied"),),
        "Events the consumer applied since the previous sample (about one per second).",
        min_top=5, agg="mean",
    ),
    PipelineChart(
        "chart-apply-latency", "Consumer apply latency", "ms (log scale)",
        (("apply_p50_ms", "p50"), ("apply_p99_ms", "p99")),
        "How long the consumer took to apply an event, p50 (solid) and p99 (dotted), "
        "logarithmic scale.", log=True,
    ),
    PipelineChart(
        "chart-memory", "Memory of the stack's processes", "MB (RssAnon)",
        (("mem_api_mb", "API (all workers)"), ("mem_relay_mb", "relay"),
         ("mem_consumer_mb", "consumer"), ("mem_postgres_mb", "PostgreSQL"),
         ("mem_rabbitmq_mb", "RabbitMQ")),
        "Private memory (RssAnon) of each process tree: PostgreSQL's shared buffers are not "
        "counted once per backend. A line that keeps rising through a soak is a leak "
        "(resources.json compares its early and late medians).", optional=True,
    ),
    PipelineChart(
        "chart-fds", "Open file descriptors", "descriptors",
        (("fds_api", "API (all workers)"), ("fds_relay", "relay"),
         ("fds_consumer", "consumer")),
        "Open descriptors of each of our process trees (sockets, log files): flat at a steady "
        "load; a rising line is a connection or file leak.", optional=True,
    ),
    PipelineChart(
        "chart-pg-sessions", "PostgreSQL sessions", "sessions",
        (("pg_conns_api", "API"), ("pg_conns_relay", "relay"),
         ("pg_conns_consumer", "consumer")),
        "Sessions each component holds (pg_stat_activity by application name): bounded by "
        "its pool.", optional=True,
    ),
    PipelineChart(
        "chart-outbox-dead", "Outbox dead tuples", "tuples",
        (("outbox_dead_tuples", "dead tuples"),),
        "Dead tuples in the outbox (each published row leaves one until autovacuum runs): a "
        "sawtooth is vacuum keeping up, a rising floor is something pinning the horizon.",
        optional=True,
    ),
)  # fmt: skip


def pipeline_section(data: RunData, ov: Overlay | None) -> str:
    """Outbox backlog, queue depths and consumer apply latency on the same time axis."""
    heading = "Pipeline: outbox, broker, consumer"
    if not data.pipeline or not ov:
        return section(
            "pipeline",
            heading,
            '<p class="missing">No pipeline.jsonl: outbox backlog, queue depth and apply '
            "latency were not sampled.</p>",
        )
    figures = [_how_to_read(ov)]
    for spec in PIPELINE_CHARTS:
        lines = [
            (S.pipeline(data.pipeline, key, label, spec.agg),
             PERCENTILE_STYLES.get(label) or PALETTE[i % len(PALETTE)])
            for i, (key, label) in enumerate(spec.keys)
        ]  # fmt: skip
        if not S.has_values([s for s, _ in lines]):
            if spec.optional:
                continue
            figures.append(f'<p class="missing">{esc(spec.title)}: no samples recorded.</p>')
            continue
        chart = line_chart(
            ov, spec.chart_id, spec.title, lines, spec.unit, log=spec.log, min_top=spec.min_top
        )
        figures.append(figure(chart, f"{spec.caption} Gaps: no sample (e.g. during a fault)."))
    return section("pipeline", heading, "".join(figures))


def _retry_note(budget: dict | None) -> str:
    """What the retry columns count, with the budget the run's clients kept."""
    if not isinstance(budget, dict):
        return ""
    return (
        '<p class="note">Retries are requests the clients sent again (counted in Requests); '
        "retries refused are those their retry budget did not send: at most "
        f"{num(budget.get('ratio'))} retries per first attempt over "
        f"{num(budget.get('ttl_s'))} s, plus {num(budget.get('floor_per_s'))} retries/s, "
        "per Locust process.</p>"
    )


def endpoints_section(data: RunData) -> str:
    """Per-endpoint totals: from the timeline, else summary.json, else Locust's CSV."""
    head = [
        "Endpoint",
        "Requests",
        "Failures",
        "Sheds",
        "Retries",
        "Retries refused",
        "Error ratio",
        "RPS",
        "Mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "Max ms",
    ]
    numeric = tuple(range(1, len(head)))
    if data.timeline and data.timeline.extent():
        rows = [
            [
                esc(r["endpoint"]),
                num(r["count"]),
                num(r["failures"]),
                num(r["sheds"]),
                num(r["retries"]),
                num(r["retries_refused"]),
                pct(r["error_ratio"]),
                num(r["rps"], 3),
                num(r["mean_ms"], 3),
                num(r["p50_ms"]),
                num(r["p95_ms"]),
                num(r["p99_ms"]),
                num(r["p99.9_ms"]),
                num(r["max_ms"], 4),
            ]
            for r in S.endpoint_totals(data.timeline)
        ]
        source = "timeline.jsonl (whole run, warm-up included; percentiles use Locust's rounding)"
    elif data.summary and isinstance(data.summary.get("endpoints"), dict):
        rows = []
        for name, e in data.summary["endpoints"].items():
            n, bad = e.get("count"), (e.get("failures") or 0) + (e.get("sheds") or 0)
            rows.append(
                [
                    esc(name),
                    num(n),
                    num(e.get("failures")),
                    num(e.get("sheds")),
                    num(e.get("retries")),
                    num(e.get("retries_refused")),
                    pct(bad / n if n else None),
                    num(e.get("rps"), 3),
                    "—",
                    num(e.get("p50_ms")),
                    num(e.get("p95_ms")),
                    num(e.get("p99_ms")),
                    "—",
                    num(e.get("max_ms"), 4),
                ]
            )
        source = "summary.json"
    elif data.locust_stats:
        rows = [
            [
                esc(f"{r.get('Type', '')} {r.get('Name', '')}".strip()),
                esc(r.get("Request Count")),
                esc(r.get("Failure Count")),
                "—",
                "—",
                "—",
                "—",
                esc(r.get("Requests/s")),
                esc(r.get("Average Response Time")),
                esc(r.get("50%")),
                esc(r.get("95%")),
                esc(r.get("99%")),
                esc(r.get("99.9%")),
                esc(r.get("Max Response Time")),
            ]
            for r in data.locust_stats
        ]
        source = "locust_stats.csv (Locust's CSV; may miss the last second)"
    else:
        return section(
            "endpoints",
            "Endpoints",
            '<p class="missing">No timeline.jsonl, '
            "summary.json or locust_stats.csv: no per-endpoint totals.</p>",
        )
    body = table(head, rows, caption=f"Per endpoint, from {esc(source)}", numeric=numeric)
    body += _retry_note((data.summary or {}).get("retry_budget"))
    saturation = (data.summary or {}).get("saturation") or {}
    if saturation.get("saturated"):
        body += (
            f'<p class="note"><strong>Generator saturated</strong> for '
            f"{esc(saturation.get('saturated_s'))} s: achieved "
            f"{esc(saturation.get('achieved_rps'))} rps vs offered "
            f"{esc(saturation.get('offered_rps'))} rps — {esc(saturation.get('reason'))}.</p>"
        )
    return section("endpoints", "Endpoints", body)


def contract_section(data: RunData) -> str:
    contract = data.contract
    if not contract:
        return ""
    passed = contract.get("passed")
    word = "PASS" if passed else "FAIL"
    facts = [("result", f'<span class="tag {"pass" if passed else "breach"}">{word}</span>')]
    for key in ("operations", "checks", "failures", "allowlisted", "errors"):
        if key in contract:
            facts.append((key, num(contract[key])))
    body = pairs(facts)
    scopes = contract.get("scopes")
    if isinstance(scopes, dict) and scopes:
        rows = [
            [esc(op), num(s.get("checks")), num(s.get("failures")), num(s.get("allowlisted"))]
            for op, s in scopes.items()
            if isinstance(s, dict)
        ]
        body += table(
            ["Operation", "Checks", "Failures", "Allow-listed"],
            rows,
            caption="Per operation",
            numeric=(1, 2, 3),
        )
    body += _contract_details(contract)
    return section("contract", "Contract tests", body)


def _contract_details(contract: dict) -> str:
    """Which checks judged responses, which could not and why, warnings and links followed."""
    body = ""
    names = contract.get("check_names")
    if isinstance(names, list) and names:
        body += pairs([("checks run", ", ".join(f"<code>{esc(n)}</code>" for n in names))])
    not_run = contract.get("not_run")
    if isinstance(not_run, dict) and not_run:
        rows = [[f"<code>{esc(n)}</code>", esc(why)] for n, why in sorted(not_run.items())]
        body += table(["Check", "Why it judged nothing"], rows, caption="Checks not run")
    warnings = contract.get("warnings")
    if isinstance(warnings, dict) and warnings:
        rows = [
            [f"<code>{esc(kind)}</code>", esc(", ".join(map(str, ops)))]
            for kind, ops in sorted(warnings.items())
            if isinstance(ops, list)
        ]
        body += table(["Warning", "Operations"], rows, caption="Schemathesis warnings")
    links = contract.get("links")
    if isinstance(links, dict) and links:
        rows = [[esc(name), num(n)] for name, n in sorted(links.items())]
        body += table(
            ["Link", "Followed to a 2xx"], rows, caption="OpenAPI links (stateful)", numeric=(1,)
        )
    return body


def benchmarks_section(data: RunData) -> str:
    if not data.benchmarks:
        return ""
    body = ""
    for file, ratios in data.benchmarks.items():
        rows = []
        for name, r in ratios.items():
            if not isinstance(r, dict):
                continue
            if r.get("informational"):
                state = '<span class="tag skipped">INFO</span>'
            elif "passed" in r:
                state = (
                    '<span class="tag pass">PASS</span>'
                    if r["passed"]
                    else '<span class="tag breach">FAIL</span>'
                )
            else:
                state = "—"
            target = f"≥ {num(r['target'])}" if r.get("target") is not None else "—"
            rows.append(
                [
                    esc(name),
                    num(r.get("median")),
                    num(r.get("min")),
                    num(r.get("max")),
                    target,
                    state,
                ]
            )
        body += table(
            ["Ratio", "Median", "Min", "Max", "Target", "Result"],
            rows,
            caption=f"Benchmark ratios from <code>{esc(file)}</code>",
            numeric=(1, 2, 3),
        )
    return section("benchmarks", "Benchmark ratios", body)
