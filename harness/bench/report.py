"""Judge a system benchmark report with the guardrails and render it as Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import guardrails
from harness.guardrails.sources import NamedSource

RESULT_FILE = "benchmark-system.json"
GATES = {"alarm": "bench-system", "target": "bench-targets"}

DEFINITIONS = {
    "R_http": "S1 GET recommendations rps ÷ B2 bare /db rps (wrk, same gunicorn config,"
    " same access line and request metrics)",
    "R_write": "POST /v1/events (one event) rps ÷ B2w bare insert+commit rps (same access line"
    " and request metrics)",
    "R_http_plain": "S1 GET recommendations rps ÷ B2 bare /db rps without access line or metrics",
    "R_write_plain": "POST /v1/events rps ÷ B2w bare insert+commit rps without access line"
    " or metrics",
    "R_hello": "B2 bare /db rps (plain) ÷ B1 bare /hello rps (share of the DB round trip)",
    "R_py": "B2 bare /db rps ÷ B3 pgbench -S TPS over the Unix socket",
    "R_tcp_vs_unix": "B3 pgbench TPS over TCP ÷ over the Unix socket",
    "R_relay": "S2 relay drain events/s ÷ B4b bare pipelined-confirm publish msgs/s",
    "R_relay_per_message": "S2 relay events/s ÷ B4a bare per-message-confirm publish msgs/s",
    "R_batchgain": "B4b pipelined confirms ÷ B4a per-message confirms",
    "R_db_share": "S2 relay events/s ÷ B6 claim/mark rows/s: the share of the relay's time"
    " its SQL alone would take",
    "R_consumer": "S3 consumer events/s ÷ B5b bare consume+insert+commit msgs/s (same batch)",
    "R_commit": "B5b commits/s (msgs/s ÷ batch) ÷ B0 fdatasync/s",
    "R_backlog_1e4": "relay drain rate, 1e4 backlog ÷ pooled 1e3 drains before and after",
    "R_backlog_1e5": "relay drain rate, 1e5 backlog ÷ pooled 1e3 drains before and after",
    "R_backlog_1e6": "relay drain rate, 1e6 backlog ÷ pooled 1e3 drains before and after",
    "R_relays_2": "2 relay processes' drain rate ÷ 1 relay (mean of one before, one after)",
    "R_relays_4": "4 relay processes' drain rate ÷ 1 relay",
    "R_publishers_2": "2 bare pipelined-confirm publisher processes' rate ÷ 1 (the events in all"
    " the same): how far the broker and the host let any two publishers scale",
    "R_publishers_4": "4 bare pipelined-confirm publisher processes' rate ÷ 1",
    "R_inbox_1e5": "consumer rate with 1e5 ids in the inbox ÷ with an empty inbox (around it)",
    "R_inbox_1e6": "consumer rate with 1e6 ids in the inbox ÷ with an empty inbox (around it)",
}


def judge(report: dict[str, Any], ruleset: guardrails.RuleSet, gate: str) -> guardrails.Verdict:
    """Evaluate the rules of one gate (``alarm`` or ``target``) against a report."""
    source = NamedSource("benchmark", report)
    profile = GATES[gate]
    rules = [r for r in ruleset.for_profile(profile) if r.source == "benchmark"]
    return guardrails.evaluate(ruleset, {"benchmark": source}, profile=profile, rules=rules)


def write(
    report: dict[str, Any], verdicts: dict[str, guardrails.Verdict], gate: str, out: Path
) -> dict[str, Path]:
    """Write benchmark-system.json, the gate's verdict, run.json and benchmark-system.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULT_FILE, "markdown": out / "benchmark-system.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    write_run_json(out, gate, verdicts[gate])
    guardrails.write_verdict(verdicts[gate], out)
    other = "target" if gate == "alarm" else "alarm"
    guardrails.write_verdict(verdicts[other], out / f"{other}s")
    paths["markdown"].write_text(markdown(report, verdicts), encoding="utf-8")
    return paths


def write_run_json(out: Path, gate: str, verdict: guardrails.Verdict) -> None:
    """Record the gate's profile and rule file: `guardrails check OUT` reproduces the verdict."""
    run = {"profile": GATES[gate]}
    if verdict.guardrails:
        run.update(guardrails.rules_record(verdict.guardrails))
    (out / "run.json").write_text(json.dumps(run) + "\n", encoding="utf-8")


def _checks(verdicts: dict[str, guardrails.Verdict]) -> dict[str, dict[str, list]]:
    """Results by value path (``ratios.R_http.median``) and gate."""
    found: dict[str, dict[str, list]] = {}
    for gate, verdict in verdicts.items():
        for result in verdict.results:
            found.setdefault(result.metric, {}).setdefault(gate, []).append(result)
    return found


def _status(results: list) -> str:
    if not results:
        return "—"
    text = " ".join(f"{r.expected}" for r in results)
    if any(r.status == "breach" for r in results):
        return f"**MISSED** ({text})"
    if all(r.status == "skipped" for r in results):
        return f"not run ({text})"
    return f"met ({text})"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, list):
        return " / ".join(_fmt(v) for v in value)
    return str(value)


def markdown(report: dict[str, Any], verdicts: dict[str, guardrails.Verdict]) -> str:
    """Every ratio with median/min/max, targets and alarms; absolutes; CPU per 1k; noise."""
    checks = _checks(verdicts)
    env = report.get("environment", {})
    lines = [
        f"## System benchmark ({report['mode']}), {env.get('date', '?')}",
        "",
        f"Machine: {env.get('nproc')} CPUs ({env.get('cpu_model')}), {env.get('memory_gib')} GiB,"
        f" kernel {env.get('kernel')}, load average {env.get('loadavg')} before /"
        f" {env.get('loadavg_after')} after; git {str(env.get('git_sha'))[:10]}"
        f"{' (dirty)' if env.get('git_dirty') else ''}.",
        "",
        "| ratio | median | min | max | noisy | target | alarm | definition |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, value in report["ratios"].items():
        path = f"ratios.{name}.median"
        lines.append(
            f"| {name} | {_fmt(value.get('median'))} | {_fmt(value.get('min', ''))} |"
            f" {_fmt(value.get('max', ''))} | {'yes' if value.get('noisy') else ''} |"
            f" {_status(checks.get(path, {}).get('target', []))} |"
            f" {_status(checks.get(path, {}).get('alarm', []))} |"
            f" {DEFINITIONS.get(name, '')} |"
        )
    e2e = report.get("latency", {}).get("e2e")
    if e2e:
        path = "latency.e2e.p99_ms"
        lines += [
            "",
            "| end-to-end (commit → applied) | p50 ms | p95 ms | p99 ms | max ms | offered/s |"
            " host busy | target | alarm |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| S4 at half relay capacity | {e2e['p50_ms']} | {e2e['p95_ms']} | {e2e['p99_ms']} |"
            f" {e2e['max_ms']} | {e2e['offered_per_s']} | {_fmt(e2e.get('host_busy', '—'))} |"
            f" {_status(checks.get(path, {}).get('target', []))} |"
            f" {_status(checks.get(path, {}).get('alarm', []))} |",
        ]
        half = report["latency"].get("e2e_half_pipeline")
        if half:
            lines.append(
                f"| at half pipeline capacity ({_fmt(half['pipeline_capacity_per_s'])}/s,"
                f" informational) | {half['p50_ms']} | {half['p95_ms']} | {half['p99_ms']} |"
                f" {half['max_ms']} | {half['offered_per_s']} | {_fmt(half.get('host_busy', '—'))}"
                " | — | — |"
            )
    lines += ["", "| absolute (trend only) | value |", "|---|---|"]
    for name, value in report["absolute"].items():
        status = _status(checks.get(f"absolute.{name}", {}).get("target", []))
        lines.append(f"| {name} | {_fmt(value)}{'' if status == '—' else ' ' + status} |")
    lines += ["", "| CPU-seconds per 1,000 operations | per process |", "|---|---|"]
    for name, value in report["cpu_s_per_1k"].items():
        lines.append(f"| {name} | {_cpu_text(value)} |")
    noise = report.get("noise", {})
    lines += [
        "",
        f"Noise: steal {noise.get('steal_percent')} %, noisy ratios"
        f" {', '.join(noise.get('noisy_ratios', [])) or 'none'}"
        f" → run {'NOISY' if noise.get('noisy') else 'not noisy'}.",
    ]
    if report.get("errors"):
        lines += ["", "Sections that failed:"]
        lines += [f"- {name}: {error}" for name, error in report["errors"].items()]
    durations = ", ".join(f"{k} {v:.0f} s" for k, v in report.get("durations_s", {}).items())
    lines += ["", f"Durations: {durations}.", ""]
    return "\n".join(lines)


def _cpu_text(value: Any) -> str:
    if not isinstance(value, dict):
        return _fmt(value)
    parts = []
    for key, item in value.items():
        if isinstance(item, dict):
            parts.append(f"{key}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in item.items()))
        else:
            parts.append(f"{key} {_fmt(item)}")
    return "; ".join(parts)
