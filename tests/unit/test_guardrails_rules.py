"""The guardrail file parser: expressions, defaults, and errors that name file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guardrails import GuardrailError, load_rules, parse_duration, parse_expr, parse_rules
from harness.guardrails.expr import ExprError

ROOT = Path(__file__).resolve().parents[2]


def error_of(text: str) -> GuardrailError:
    with pytest.raises(GuardrailError) as info:
        parse_rules(text, "g.toml")
    return info.value


@pytest.mark.parametrize(
    ("text", "metric", "op", "number", "percentile"),
    [
        ("p(99) < 200", "p", "<", 200.0, 99.0),
        ("p(99.9)<=400", "p", "<=", 400.0, 99.9),
        ("avg > 1.5e2", "avg", ">", 150.0, None),
        ("med == 3", "p", "==", 3.0, 50.0),
        ("rate < 0.01", "fail_ratio", "<", 0.01, None),
        ("rps >= 10", "rps", ">=", 10.0, None),
        ("count != 0", "count", "!=", 0.0, None),
    ],
)
def test_k6_style_expressions(text, metric, op, number, percentile) -> None:
    expr = parse_expr(text)
    assert (expr.metric, expr.op, expr.number, expr.percentile) == (metric, op, number, percentile)


def test_units_convert_into_the_source_unit() -> None:
    assert parse_expr("p(95) < 0.2s").threshold(0.001) == pytest.approx(200.0)
    assert parse_expr("p(95) < 150ms").threshold(0.001) == pytest.approx(150.0)
    assert parse_expr("fail_ratio < 0.1%").threshold(0.001) == pytest.approx(0.001)
    assert parse_expr("mean < 2ms", timed=False).threshold(1.0) == pytest.approx(0.002)
    assert parse_expr("p(99) < 200").expected(0.001) == "< 200 ms"


def test_named_metrics_are_free_form_for_value_sources() -> None:
    assert parse_expr("lost == 0", timed=False).label == "lost"
    assert parse_expr("ratios.R_http.median >= 0.75", timed=False).metric == "ratios.R_http.median"
    with pytest.raises(ExprError, match="unknown metric 'lost'"):
        parse_expr("lost == 0")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("p(99) 200", "cannot parse"),
        ("p(0) < 1", "percentile"),
        ("p(101) < 1", "percentile"),
        ("fail_ratio < 5ms", "only applies to latency"),
        ("p(99) < abc", "cannot parse"),
    ],
)
def test_bad_expressions_say_why(text: str, reason: str) -> None:
    with pytest.raises(ExprError, match=reason):
        parse_expr(text)


def test_a_full_file_with_every_key() -> None:
    ruleset = parse_rules(
        """
[settings]
tolerated_fail_ratio = 0.01
warmup = "10s"
abort_on_fail = false
delay_abort_eval = "1m"

[slo]
p99_ms = 250
error_ratio = 0.002

[[rule]]
name = "reads"
source = "server"
scope = "GET /v1/users/[id]/recommendations"
phase = "last 30s"
expr = ["p(99) < 200", "fail_ratio < 0.1%"]
profiles = ["steady"]
description = "why this rule exists"

[[rule]]
scope = "each"
phase = "first 1m"
expr = "p(95) < 100"
abort_on_fail = true

[[rule]]
source = "audit"
expr = "lost_count == 0"
""",
        "g.toml",
    )
    assert ruleset.settings.warmup_s == 10 and ruleset.settings.delay_abort_eval_s == 60
    assert ruleset.slo.p99_ms == 250 and ruleset.slo.error_ratio == 0.002
    tolerated, reads, each, audit = ruleset.rules
    assert tolerated.name == "tolerated failure ratio" and tolerated.line == 3
    assert tolerated.exprs[0].text == "fail_ratio <= 0.01"
    assert reads.source == "server" and reads.phase.kind == "last" and reads.phase.seconds == 30
    assert reads.profiles == ("steady",) and reads.line == 12 and len(reads.exprs) == 2
    assert each.scope == "each" and each.abort_on_fail and each.phase.seconds == 60
    assert each.source == "locust" and each.name.startswith("locust each first 1m")
    assert audit.invariant and not reads.invariant
    assert ruleset.for_profile("smoke") == [tolerated, each, audit]


def test_the_shipped_guardrail_file_is_valid() -> None:
    ruleset = load_rules(ROOT / "guardrails.toml")
    assert ruleset.rules
    assert any(r.source == "server" for r in ruleset.rules)
    assert any(r.source == "audit" and r.invariant for r in ruleset.rules)


def test_invalid_toml_reports_line_and_reason() -> None:
    err = error_of('[[rule]]\nexpr = "p(99) < 1"\nname = \n')
    assert (err.path, err.line) == ("g.toml", 3)
    assert "invalid TOML" in err.reason
    assert str(err).startswith("g.toml:3: invalid TOML")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[[rule]]\nexpr = "p(99) < 1"\nscop = "each"\n', 3, "unknown key 'scop'"),
        ('[[rule]]\nname = "x"\n', 1, "needs 'expr'"),
        ('[[rule]]\nexpr = [\n  "p(99) < 1",\n  "p(99) <",\n]\n', 4, "cannot parse 'p(99) <'"),
        ('[[rule]]\nexpr = "latency < 1"\n', 2, "unknown metric 'latency'"),
        ('[[rule]]\nsource = "server"\nexpr = "max < 1"\n', 3, "not available from server"),
        ('[[rule]]\nphase = "lunch time!"\nexpr = "p(99) < 1"\n', 2, "unknown phase"),
        ('[[rule]]\nphase = "last 0s"\nexpr = "p(99) < 1"\n', 2, "positive duration"),
        ('[[rule]]\nsource = "audit"\nphase = "fault"\nexpr = "lost == 0"\n', 3, "no time axis"),
        ('[[rule]]\nsource = "audit"\nabort_on_fail = true\nexpr = "x == 0"\n', 3, "live source"),
        ('[[rule]]\nsource = "Not Valid"\nexpr = "x == 0"\n', 2, "unknown source"),
        ('[[rule]]\nprofiles = [1]\nexpr = "p(99) < 1"\n', 2, "profiles must be a list"),
        ('[[rule]]\ninvariant = "yes"\nexpr = "p(99) < 1"\n', 2, "expected true or false"),
        ('[settings]\nwarmup = "soon"\n', 2, "settings.warmup"),
        ("[settings]\ntolerated_fail_ratio = 2\n", 2, "between 0 and 1"),
        ('[settings]\ncolour = "red"\n', 2, "unknown key 'colour' in [settings]"),
        ("[slo]\np99_ms = -1\n", 2, "slo.p99_ms"),
        ("[thresholds]\nx = 1\n", 1, "unknown key 'thresholds'"),
        ('rule = "p(99) < 1"\n', 1, "'rule' must be an array"),
        ('[[rule]]\nexpr = "p(99) < 1"\n\n[[rule]]\nexpr = []\n', 5, "the list is empty"),
    ],
)
def test_malformed_files_name_the_line_and_the_reason(text: str, line: int, reason: str) -> None:
    err = error_of(text)
    assert err.line == line, str(err)
    assert reason in err.reason, str(err)
    assert str(err).startswith(f"g.toml:{line}: ")


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(GuardrailError, match="missing.toml: cannot read"):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[[rule]]")
    with pytest.raises(GuardrailError, match="not UTF-8"):
        load_rules(bad)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), (1.5, 1.5)],
)
def test_durations(value, seconds) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 parsecs", -1, True])
def test_bad_durations(value) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
