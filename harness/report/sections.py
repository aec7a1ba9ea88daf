"""Sections about the outcome: the verdict banner, every check, the audit, what is missing."""

from __future__ import annotations

from typing import Any

from harness.report.html import esc, ids, num, pairs, section, table
from harness.report.load import INPUTS, RunData

EXIT_MEANING = {
    0: "pass",
    1: "guardrail breach",
    2: "usage, configuration or harness error",
    3: "invariant violated: lost, invented or double-applied data",
}
# Audit measures that must be zero; each offending id list is shown in full (as recorded).
OFFENDING = (
    ("lost", "Lost", "writes acknowledged (ok) whose events never took effect"),
    ("unexpected", "Unexpected", "effects nobody attempted (phantom events)"),
    ("failed_but_applied", "Failed but applied", "writes reported failed that took effect"),
)


def exit_code(data: RunData) -> int | None:
    """The run's exit code: the chaos journal's, else the verdict's, else none."""
    # Not Locust's own exit code: `load run` judges the audit, resources and pipeline after
    # Locust exits, so a run without its verdict.json has no verdict, not Locust's pass.
    for source, key in ((data.journal, "exit_code"), (data.verdict, "exit_code")):
        value = (source or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def run_name(data: RunData) -> str:
    journal, run = data.journal or {}, data.run or {}
    if journal.get("experiment"):
        title = f" — {journal['title']}" if journal.get("title") else ""
        return f"Chaos run: {journal['experiment']}{title}"
    profile = run.get("profile") or (data.summary or {}).get("profile")
    if profile:
        return f"Load run: {profile} profile"
    return f"Run report: {data.root.name}"


def banner(data: RunData, negative_control: dict[str, Any] | None) -> str:
    """The verdict at the top: the word, the exit code, every breach and any lost events."""
    code = exit_code(data)
    verdict = data.verdict or {}
    if code is None:
        word, cls = "NO VERDICT", "unknown"
    elif code == 0:
        word, cls = "PASS", "pass"
    elif code == 2:
        word, cls = "ERROR", "fail"
    else:
        word, cls = "FAIL", "fail"
    facts = []
    if code is not None:
        facts.append(f"exit {code}: {EXIT_MEANING.get(code, 'unknown exit code')}")
    counts = verdict.get("counts") or {}
    if counts:
        facts.append(
            f"{counts.get('breaches', 0)} of {counts.get('checks', 0)} checks breached, "
            f"{counts.get('skipped', 0)} skipped"
        )
    if not data.verdict:
        facts.append("no verdict.json in this run")
    out = [
        f'<div class="banner {cls}" role="status" aria-label="verdict">',
        f"<h1>{esc(run_name(data))}</h1>",
        f'<p class="verdict-word">{word}</p>',
        f'<p class="meta">{esc(" · ".join(facts))}</p>',
    ]
    if negative_control:
        expected = negative_control.get("expect_exit", 3)
        caught = "caught as expected" if code == expected else "NOT caught"
        out.append(
            f'<p class="meta"><strong>Negative control</strong> (switch '
            f"<code>{esc(negative_control.get('switch', '?'))}</code>): it breaks the "
            f"pipeline on purpose and must exit {esc(expected)} — {caught}.</p>"
        )
    if verdict.get("aborted"):
        out.append(f'<p class="meta"><strong>Aborted early:</strong> {esc(verdict["aborted"])}</p>')
    breaches = [r for r in verdict.get("results", []) if r.get("status") == "breach"]
    if breaches:
        items = "".join(
            f"<li>{_status_tag(r)}<strong>{esc(r.get('rule'))}</strong>: "
            f'{esc(_message(r))} <span class="note">({esc(r.get("target") or r.get("scope"))}, '
            f"phase {esc(r.get('phase'))})</span></li>"
            for r in breaches
        )
        out.append(
            f"<p><strong>Breached guardrails ({len(breaches)}):</strong></p>"
            f'<ul class="breaches">{items}</ul>'
        )
    out.append(_lost_box(data.audit or {}))
    out.append("</div>")
    return "\n".join(o for o in out if o)


def _lost_box(audit: dict) -> str:
    """Offending events right under the verdict: the first thing a failing run must show."""
    parts = []
    for key, title, meaning in OFFENDING:
        count = _count(audit, key)
        if count:
            parts.append(
                f"<h2>{count:,} {esc(title.lower())} event(s)</h2>"
                f'<p class="note">{esc(meaning)}</p>{ids(audit.get(key) or [], count)}'
            )
    duplicated = audit.get("duplicated_effects")
    if isinstance(duplicated, int) and duplicated > 0:
        parts.append(
            f"<h2>{duplicated:,} duplicated effect(s)</h2>"
            '<p class="note">events applied more than once to the feature tables</p>'
        )
    if not parts:
        return ""
    return f'<div class="lost-box" role="alert">{"".join(parts)}</div>'


def _count(audit: dict, key: str) -> int:
    value = audit.get(f"{key}_count")
    if isinstance(value, int):
        return value
    return len(audit.get(key) or [])


def _status_tag(result: dict) -> str:
    status = result.get("status", "?")
    if status == "breach" and result.get("invariant"):
        return '<span class="tag invariant">INVARIANT</span>'
    return f'<span class="tag {esc(status)}">{esc(str(status).upper())}</span>'


def _message(result: dict) -> str:
    if result.get("message"):
        return str(result["message"])
    return f"{result.get('metric')} = {result.get('observed')}, expected {result.get('expected')}"


def verdict_section(data: RunData) -> str:
    verdict = data.verdict
    if not verdict:
        return section(
            "verdict",
            "Guardrails",
            '<p class="missing">No verdict.json: this run '
            "was not judged (run <code>reco-harness guardrails check RUN_DIR</code>).</p>",
        )
    order = {"breach": 0, "pass": 1, "skipped": 2}
    results = sorted(verdict.get("results", []), key=lambda r: order.get(r.get("status"), 3))
    rows, classes = [], []
    for r in results:
        skipped = r.get("status") == "skipped"
        observed = (
            esc(r.get("reason")) if skipped else num(r.get("observed"), unit=r.get("unit", ""))
        )
        rows.append(
            [
                f"{_status_tag(r)}",
                esc(r.get("rule")),
                esc(r.get("source")),
                esc(r.get("target") or r.get("scope")),
                esc(r.get("phase")),
                f"<code>{esc(r.get('expr'))}</code>",
                observed,
                esc(r.get("expected")),
            ]
        )
        classes.append(str(r.get("status", "")))
    meta = pairs(
        [
            ("guardrail file", f"<code>{esc(verdict.get('guardrails'))}</code>"),
            ("profile", esc(verdict.get("profile") or "—")),
        ]
    )
    body = meta + table(
        ["Status", "Rule", "Source", "Scope", "Phase", "Check", "Observed", "Expected"],
        rows,
        caption="Every check, breaches first",
        row_header=False,
        classes=classes,
        numeric=(6,),
    )
    return section("verdict", "Guardrails", body)


def audit_section(data: RunData) -> str:
    audit = data.audit
    if not audit:
        return section(
            "audit",
            "Invariant audit",
            '<p class="missing">No audit.json: the run '
            "did not reconcile its writes against the database.</p>",
        )
    rows, classes = [], []

    def add(name: str, value: Any, expected: str = "", bad: bool | None = None) -> None:
        state = (
            ""
            if bad is None
            else (
                '<span class="tag breach">VIOLATION</span>'
                if bad
                else '<span class="tag pass">OK</span>'
            )
        )
        rows.append([esc(name), num(value), esc(expected), state])
        classes.append("breach" if bad else "")

    for key, title, _ in OFFENDING:
        add(f"{title} events", _count(audit, key), "0", _count(audit, key) > 0)
    for key, title in (
        ("duplicated_effects", "Duplicated effects"),
        ("missing_effects", "Missing effects"),
    ):
        if key in audit:
            add(title, audit[key], "0", audit[key] != 0)
    add("Recovered (unknown outcome, did land)", _count(audit, "recovered"))
    if "broker_duplicates" in audit:
        add("Duplicates at the broker, absorbed by the inbox", audit["broker_duplicates"])
    if "info_absent" in audit:
        add("Unknown outcome, did not land", audit["info_absent"])
    if "dlq_depth" in audit:
        matches = audit.get("dlq_matches")
        add(
            "Dead-letter queue depth",
            audit["dlq_depth"],
            f"{audit.get('expected_dlq', 0)}",
            None if matches is None else not matches,
        )
    if "drained" in audit:
        add("Pipeline drained", audit["drained"], "yes", not audit["drained"])
        add("Drain time", audit.get("drain_seconds"), "s")
    for key, title, limit in (
        ("readiness_recovery_s", "Readiness recovery (s)", None),
        ("worker_timeouts", "Gunicorn worker timeouts", 0),
        ("idle_in_transaction", "Sessions idle in transaction", 0),
    ):
        if audit.get(key) is not None:
            add(
                title,
                audit[key],
                "" if limit is None else str(limit),
                None if limit is None else audit[key] > limit,
            )
    for key, title in (
        ("outbox_pending", "Outbox rows still pending"),
        ("queue_ready", "Messages still queued"),
        ("applied", "Events applied"),
        ("steady_state_after", "Steady state after the run"),
    ):
        if key in audit:
            add(title, audit[key])
    body = table(
        ["Measure", "Value", "Expected", "State"],
        rows,
        caption="Reconciliation of recorded writes against the database and broker",
        classes=classes,
        numeric=(1,),
    )
    if audit.get("violations"):
        items = "".join(f"<li>{esc(v)}</li>" for v in audit["violations"])
        body += f"<h3>Violations</h3><ul>{items}</ul>"
    for key, title, meaning in OFFENDING:
        if _count(audit, key):
            body += f'<h3>{esc(title)} event ids</h3><p class="note">{esc(meaning)}</p>'
            body += ids(audit.get(key) or [], _count(audit, key))
    if _count(audit, "recovered"):
        body += (
            "<details><summary>Recovered event ids (informational)</summary>"
            f"{ids(audit.get('recovered') or [], _count(audit, 'recovered'))}</details>"
        )
    return section("audit", "Invariant audit", body)


def missing_section(data: RunData) -> str:
    if not data.missing and not data.problems:
        return ""
    body = ""
    if data.missing:
        rows = [[f"<code>{esc(n)}</code>", esc(INPUTS.get(n, ""))] for n in data.missing]
        body += table(
            ["File", "What it would add"],
            rows,
            caption="Inputs not found in this run directory (their parts are left out)",
        )
    if data.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in data.problems)
        body += f"<h3>Inputs that could not be read</h3><ul>{items}</ul>"
    return section("missing", "Missing inputs", body)


# (label, resources.json scope key or early/late pair) per column of the process table.
PROCESS_COLUMNS = (
    ("memory early (MB)", "mem_early_mb"),
    ("memory late (MB)", "mem_late_mb"),
    ("growth (MB)", "mem_growth_mb"),
    ("slope (MB/h)", "mem_slope_mb_per_h"),
    ("descriptors early → late", ("fds_early", "fds_late")),
    ("threads early → late", ("threads_early", "threads_late")),
    ("sessions early → late", ("pg_conns_early", "pg_conns_late")),
)
COMPONENT_NAMES = {
    "api": "API (all workers)",
    "relay": "relay",
    "consumer": "consumer",
    "postgres": "PostgreSQL",
    "rabbitmq": "RabbitMQ",
}


def resources_section(data: RunData) -> str:
    """Early against late: memory, descriptors, threads, sessions per process tree; p99 drift."""
    if not data.resources and not data.drift:
        return ""
    parts = []
    res = data.resources or {}
    scopes = res.get("scopes") or {}
    rows = []
    for name, label in COMPONENT_NAMES.items():
        scope = scopes.get(name)
        if not isinstance(scope, dict):
            continue
        cells = [esc(label + ("" if name in (res.get("gated") or []) else " (reported)"))]
        for _, key in PROCESS_COLUMNS:
            if isinstance(key, tuple):
                first, last = (scope.get(k) for k in key)
                cells.append("—" if first is None else f"{num(first)} → {num(last)}")
            else:
                cells.append(num(scope.get(key)))
        rows.append(cells)
    if rows:
        windows = res.get("windows") or {}
        parts.append(
            table(
                ["process tree", *(c[0] for c in PROCESS_COLUMNS)],
                rows,
                caption=f"Medians over an early and a late window ({_window_text(windows)} each); "
                "the slope is fitted after the early window. Private memory (RssAnon).",
                numeric=range(1, 5),
            )
        )
    outbox = scopes.get("outbox") if isinstance(scopes.get("outbox"), dict) else None
    health = [
        ("Worker timeouts", res.get("worker_timeouts")),
        ("Worker crashes", res.get("worker_crashes")),
        ("Workers booted during the run", res.get("worker_boots")),
        ("Sessions idle in a transaction (> 30 s)", res.get("idle_in_transaction")),
    ]
    if outbox:
        dead = [num(outbox.get(f"dead_tuples_{k}")) for k in ("early", "late", "peak")]
        size = [num(outbox.get(f"size_mb_{k}")) for k in ("early", "late")]
        health += [
            ("Outbox dead tuples, early → late (peak)", f"{dead[0]} → {dead[1]} ({dead[2]})"),
            ("Outbox size (MB), early → late", f"{size[0]} → {size[1]}"),
        ]
    shown = [(k, v if isinstance(v, str) else num(v)) for k, v in health if v is not None]
    if shown:
        parts.append(pairs(shown))
    drift_scopes = (data.drift or {}).get("scopes") or {}
    floor = num((data.drift or {}).get("floor_ms"))
    if drift_scopes:
        parts.append(
            table(
                ["endpoint", "p99 early (ms)", "p99 late (ms)", "drift", "requests early / late"],
                [
                    [
                        esc(name),
                        num(d.get("p99_early_ms")),
                        num(d.get("p99_late_ms")),
                        f"{num(100 * d['p99_drift'], 3)} %"
                        if d.get("p99_drift") is not None
                        else "—",
                        f"{num(d.get('requests_early'))} / {num(d.get('requests_late'))}",
                    ]
                    for name, d in drift_scopes.items()
                ],  # fmt: skip
                caption="Client p99 late in the run against early in it; drift is the late "
                f"excess as a share of the early p99 (at least {floor} ms).",
                numeric=range(1, 4),
            )
        )
    return section("resources", "Resources and drift (early against late)", "".join(parts))


def _window_text(windows: dict) -> str:
    window = windows.get("late")
    if not isinstance(window, list) or len(window) != 2:
        return "?"
    return f"{num(window[1] - window[0], 3)} s"
