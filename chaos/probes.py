"""Steady-state probes and the live observations a chaos run prints and records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg2
import requests

from chaos.experiment import Probe
from harness import metrics_page


def readiness(api_url: str, path: str = "/readyz") -> int | None:
    """HTTP status of a probe path, None when unreachable."""
    try:
        return requests.get(api_url + path, timeout=2).status_code
    except requests.RequestException:
        return None


def counter_value(text: str, name: str) -> float | None:
    """Sum every sample of the counter ``name`` (``<name>_total``) in a Prometheus text page."""
    return metrics_page.family_value(text, name, f"{name}_total")


def counter(metrics_url: str, name: str) -> float | None:
    """A counter read from a worker's /metrics, None when it does not answer."""
    return metrics_page.scrape(metrics_url, name, f"{name}_total", timeout_s=2)


class CounterIncrease:
    """A counter's increase over a run, sampled now and then; a drop means a restart from 0."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.total = 0.0

    def observe(self, value: float | None) -> None:
        if value is None:
            return
        if self.last is not None:
            self.total += value - self.last if value >= self.last else value
        self.last = value


def outbox_backlog(database_url: str) -> int | None:
    """Unpublished outbox rows, None when the database is unreachable."""
    try:
        conn = psycopg2.connect(database_url, connect_timeout=2)
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def leftover_faults(
    toxiproxy_url: str | None, links: list[str], apps: dict[str, bool]
) -> list[str]:
    """What an earlier run left broken: disabled or toxic links, stopped apps ([] if none).

    ``apps`` maps each application process to whether it runs. An experiment started on such
    a stack would charge the old fault to itself (a disabled link reads as lost events).
    """
    from chaos.faultproxy.client import Client, ToxiproxyError

    problems = [f"{name} is stopped" for name, running in apps.items() if not running]
    if not links:
        return problems
    try:
        with Client(toxiproxy_url, timeout=5) as client:
            proxies = client.proxies()
    except (ToxiproxyError, requests.RequestException) as exc:
        return [*problems, f"the fault proxy does not answer ({exc})"]
    for name in links:
        proxy = proxies.get(name)
        if proxy is None:
            problems.append(f"link {name} has no proxy")
        elif not proxy.get("enabled"):
            problems.append(f"link {name} is disabled")
        elif proxy.get("toxics"):
            toxics = ", ".join(t.get("name", "?") for t in proxy["toxics"])
            problems.append(f"link {name} still has toxics ({toxics})")
    return problems


class HistoryTail:
    """Count write outcomes from history*.jsonl files as they grow."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._offsets: dict[Path, int] = {}
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.recent: list[tuple[float, str, float]] = []  # (t, outcome, latency_ms)

    def poll(self) -> None:
        for path in sorted(self.run_dir.glob("history*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path, encoding="utf-8") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self._offsets[path] = offset + len(complete.encode())
            for line in complete.splitlines():
                try:
                    op = json.loads(line)
                except ValueError:
                    continue
                outcome = op.get("outcome")
                if op.get("op", "write") == "write" and outcome in self.counts:
                    self.counts[outcome] += 1
                    self.recent.append(
                        (float(op.get("t", 0)), outcome, float(op.get("latency_ms") or 0))
                    )
        self.recent = self.recent[-5000:]

    def window(self, since: float) -> dict[str, Any]:
        """Writes per outcome since ``since`` (unix time)."""
        ops = [r for r in self.recent if r[0] >= since]
        counts = {k: sum(1 for r in ops if r[1] == k) for k in self.counts}
        return {"writes": len(ops), **counts}


def check(
    probe: Probe, api_url: str, database_url: str, tail: HistoryTail, since: float
) -> tuple[bool, Any]:
    """Evaluate one probe against its tolerance; return (ok, observed)."""
    if probe.type == "http":
        status = readiness(api_url, probe.path)
        return status == int(probe.tolerance), status
    if probe.type == "backlog":
        backlog = outbox_backlog(database_url)
        return backlog is not None and backlog <= int(probe.tolerance), backlog
    window = tail.window(since)
    if probe.type == "error_ratio":
        writes = window["writes"]
        ratio = (window["fail"] + window["info"]) / writes if writes else 0.0
        return ratio <= float(probe.tolerance), round(ratio, 4)
    if probe.type == "p99_ms":
        latencies = sorted(r[2] for r in tail.recent if r[0] >= since)
        p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
        return p99 <= float(probe.tolerance), round(p99, 1)
    return False, f"unknown probe type {probe.type}"
