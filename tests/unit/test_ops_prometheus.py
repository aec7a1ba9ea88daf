"""Prometheus rules and the Grafana dashboard: promtool passes, every alert is tested both ways,
documented in the runbook, and built on metric names the code actually exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "ops" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
ALERT_TESTS = PROM / "tests" / "alerts.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "reco-overview.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: apt-get install prometheus (scripts/bootstrap installs it)",
)
# Series the rules read that no module of ours defines: RabbitMQ's own exporter, Prometheus'
# scrape health, and a queue-depth gauge the workers are expected to export.
EXTERNAL = {"up", "rabbitmq_detailed_queue_messages", "reco_queue_depth"}


def _alerts() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


def _exported_names() -> set[str]:
    """Metric names declared in service/ and workers/, with their exposition suffixes."""
    names = set()
    pattern = re.compile(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"([a-z_]+)"')
    for package in ("service", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            for name in pattern.findall(path.read_text()):
                base = name.removesuffix("_total")
                names |= {base, f"{base}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    # prometheus-flask-exporter's own series (service/metrics.py configures it).
    names |= {
        "flask_http_request_total",
        "flask_http_request_duration_seconds_bucket",
        "flask_http_request_duration_seconds_count",
        "flask_http_request_duration_seconds_sum",
    }
    return names


def _metric_names(expr: str) -> set[str]:
    """Raw series names in a PromQL expression (recorded series contain ':' and are skipped)."""
    expr = re.sub(r'"[^"]*"', "", expr)  # string arguments (label_replace's) name no series
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"(?<![\w.])[a-z_:][a-z0-9_:]*", expr))
    keywords = {
        "sum", "max", "min", "avg", "by", "rate", "increase", "and", "or", "unless", "without",
        "histogram_quantile", "round", "le", "job", "path", "instance", "queue", "reason", "kind",
        "status", "result", "outcome", "bool", "on", "ignoring", "absent", "label_replace",
    }  # fmt: skip
    return {w for w in words - keywords if ":" not in w}


@needs_promtool
def test_rule_files_pass_promtool_check():
    done = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERT_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "alerts without a case that fires"
    assert names - silent == set(), "alerts without a case that stays silent"


def test_every_alert_has_severity_summary_and_a_runbook_section():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        link = rule["annotations"]["runbook_url"]
        assert link.startswith("docs/runbook.md#"), rule["alert"]
        assert link.split("#", 1)[1] in anchors, f"{rule['alert']}: no runbook section {link}"


def test_rules_and_dashboard_use_metrics_the_code_exports():
    exported = _exported_names() | EXTERNAL
    exprs = [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    exprs += [target["expr"] for target in _dashboard_targets()]
    used = set().union(*map(_metric_names, exprs))
    assert used - exported == set(), "metric names nobody exports (renamed?)"


def _dashboard_targets() -> list[dict]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_dashboard_is_importable_json_with_unique_panel_ids():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "api_job"}
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], panel["title"]


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """promtool parses each panel query (Grafana's variables replaced by plain values)."""
    rules = []
    for i, target in enumerate(_dashboard_targets()):
        expr = target["expr"].replace("$__rate_interval", "5m")
        expr = re.sub(r"\$[a-z_]+", "x", expr)
        rules.append({"record": f"dashboard:query_{i}:check", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
