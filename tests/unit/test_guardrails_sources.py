"""Sources of the guardrail engine: histogram, timeline, Prometheus diffing and result files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.guardrails import check_dir, evaluate, load_results, parse_expr, parse_rules
from harness.guardrails.histogram import Histogram, bucket
from harness.guardrails.prometheus import (
    Scrapes,
    Snapshot,
    by_endpoint,
    endpoint_name,
    parse,
    quantile,
)
from harness.guardrails.rules import GuardrailError
from harness.guardrails.sources import ServerSource
from harness.guardrails.timeline import Timeline, paced_seconds, paced_throughput, saturation

T0 = 1_800_000_000


def test_histogram_rounds_like_locust_and_merges() -> None:
    assert [bucket(x) for x in (7.4, 99.6, 123, 1234, 12345)] == [7, 100, 120, 1200, 12000]
    a, b = Histogram(), Histogram()
    for ms in range(1, 101):
        a.add(float(ms))
    b.add(500.0, times=10)
    merged = Histogram.merged([a, b])
    assert merged.n == 110 and merged.low == 1.0 and merged.high == 500.0
    assert a.percentile(50) == 50 and a.percentile(99) == 99 and a.percentile(100) == 100
    assert merged.percentile(95) == 500
    assert Histogram.from_dict(json.loads(json.dumps(merged.to_dict()))).percentile(95) == 500
    assert Histogram().percentile(99) is None and Histogram().mean is None


def test_percentile_never_leaves_the_observed_range() -> None:
    h = Histogram()
    h.add(104.0)  # rounds to 100, below the only real sample
    assert h.percentile(50) == 104.0


def test_timeline_moves_rows_between_workers_and_files(tmp_path: Path) -> None:
    worker = Timeline()
    worker.record(T0 + 0.2, "GET /a", 10.0)
    worker.record(T0 + 1.5, "GET /a", 20.0, "fail")
    worker.record(T0 + 1.7, "GET /a", 30.0, "shed")
    first = worker.pop_rows(before=T0 + 1)  # only the finished second leaves
    assert [r["t"] for r in first] == [T0]
    master = Timeline()
    master.merge_rows(first)
    master.merge_rows(worker.pop_rows())
    assert worker.cells == {}
    master.set_meta(T0 + 1, users=3, offered_rps=6.0)
    master.write_jsonl(tmp_path / "t.jsonl")
    again = Timeline.read_jsonl(tmp_path / "t.jsonl")
    cell = again.window(T0, T0 + 2).cells["GET /a"]
    assert (cell.hist.n, cell.fail, cell.shed) == (3, 1, 1)
    assert again.window(T0, T0 + 2).offered == 6.0
    assert again.extent() == (T0, T0 + 2)
    master.write_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["endpoint"] for r in rows] == ["GET /a", "Aggregated", "GET /a", "Aggregated"]
    assert rows[2]["failures"] == "1" and rows[2]["sheds"] == "1" and rows[2]["users"] == "3"


def test_saturation_flags_achieved_below_offered() -> None:
    tl = Timeline()
    for s in range(20):
        tl.set_meta(T0 + s, users=10, offered_rps=10.0, cpu=95.0 if s >= 10 else 20.0)
        for _ in range(10 if s < 10 else 5):
            tl.record(T0 + s, "GET /a", 5.0)
    result = saturation(tl, T0, T0 + 20)
    assert result["saturated"] and result["stretches"] == [[T0 + 7, T0 + 20]]
    assert result["throughput_ratio"] == 0.75 and "CPU" in result["reason"]
    # The rule's figure leaves out the first second (no user count before it to compare).
    assert result["paced_throughput_ratio"] == round(140 / 190, 4)
    calm = saturation(tl, T0, T0 + 10)
    assert not calm["saturated"] and calm["throughput_ratio"] == 1.0
    assert calm["paced_throughput_ratio"] == 1.0


FAMILY = "flask_http_request_duration_seconds"
READ_LABELS = 'method="GET",path="/v1/users/<user_id>/recommendations",status="200"'
SHED_LABELS = 'method="POST",path="/v1/events",status="503"'


def scrape(a: float, b: float, s: float, c: float) -> str:
    """Exposition text: ``a`` reads under 10 ms, ``b`` in all (< 100 ms), ``c`` shed writes."""
    lines = [
        f"# HELP {FAMILY} Flask HTTP request duration in seconds",
        f"# TYPE {FAMILY} histogram",
        f'{FAMILY}_bucket{{le="0.01",{READ_LABELS}}} {a}',
        f'{FAMILY}_bucket{{le="0.1",{READ_LABELS}}} {b}',
        f'{FAMILY}_bucket{{le="+Inf",{READ_LABELS}}} {b}',
        f"{FAMILY}_count{{{READ_LABELS}}} {b}",
        f"{FAMILY}_sum{{{READ_LABELS}}} {s}",
        *(f'{FAMILY}_bucket{{le="{le}",{SHED_LABELS}}} {c}' for le in ("0.01", "0.1", "+Inf")),
        f"{FAMILY}_count{{{SHED_LABELS}}} {c}",
        f"{FAMILY}_sum{{{SHED_LABELS}}} 0.01",
        f'{FAMILY}_bucket{{le="+Inf",method="GET",path="/readyz",status="200"}} 9.0',
        f'{FAMILY}_count{{method="GET",path="/readyz",status="200"}} 9.0',
        'flask_http_request_total{method="GET",status="200"} 3.0',
    ]
    return "\n".join(lines) + "\n"


PACE = '[[rule]]\nname = "kept pace"\nphase = "plateau"\nexpr = "throughput_ratio >= 0.95"\n'


def paced_run(users: list[int], requests: list[int], user_rps: float = 2.0) -> Timeline:
    """Users counted at the end of each second from T0 and the requests each second saw."""
    tl = Timeline()
    for s, (n, done) in enumerate(zip(users, requests, strict=True)):
        tl.set_meta(T0 + s, users=n, offered_rps=n * user_rps)
        for _ in range(done):
            tl.record(T0 + s + 0.5, "GET /a", 5.0)
    return tl


def kept_pace(tl: Timeline, plateau: tuple[float, float]):
    verdict = evaluate(parse_rules(PACE, "g.toml"), {"locust": tl}, phases={"plateau": plateau})
    return verdict.results[0]


def test_pacing_is_judged_from_when_every_user_runs() -> None:
    """A 5 s smoke run on two forked workers: the users arrive a second after the shape's ramp
    (1.25 s) and stop in the second after the shape ended. Counting the seconds users
    started in breached a healthy run."""
    tl = paced_run(users=[0, 4, 8, 10, 10, 10, 0], requests=[0, 2, 11, 17, 20, 20, 12])
    plateau = (T0 + 2.05, T0 + 5.8)  # the shape's, from its start at T0 + 0.8
    win = tl.window(*plateau)
    assert win.total().hist.n / win.offered < 0.95  # what the check used to see
    assert paced_seconds(tl, *plateau) == [T0 + 4, T0 + 5]
    result = kept_pace(tl, plateau)
    assert (result.status, result.observed) == ("pass", 1.0)


def test_a_generator_that_lags_once_every_user_runs_still_fails() -> None:
    tl = paced_run(users=[4, 10, 10, 10, 10, 10, 10], requests=[3, 14, 16, 16, 16, 16, 16])
    result = kept_pace(tl, (T0 + 1, T0 + 7))
    assert (result.status, result.observed) == ("breach", 0.8)  # 16 of 20 a second
    # Users started or stopped in every second: no pacing to judge, and no pass.
    ramp = paced_run(users=[2, 4, 6, 8, 10, 0], requests=[1, 3, 5, 7, 9, 10])
    assert paced_throughput(ramp, T0, T0 + 6) is None
    assert kept_pace(ramp, (T0, T0 + 6)).status != "pass"


def test_saturation_skips_the_windows_of_a_ramp() -> None:
    """Achieved lags offered while users start: the generator is not saturated for that."""
    ramp = [2 * s for s in range(1, 11)]
    tl = paced_run(users=[*ramp, *[20] * 10], requests=[n * 3 // 2 for n in ramp] + [40] * 10)
    result = saturation(tl, T0, T0 + 20)
    assert not result["saturated"], result


def test_prometheus_text_is_parsed_diffed_and_interpolated() -> None:
    before = parse(scrape(10, 10, 0.05, 0))
    after = parse(scrape(60, 110, 3.05, 5))
    key = ("GET", "/v1/users/<user_id>/recommendations", "200")
    assert after[key].buckets == {0.01: 60.0, 0.1: 110.0, float("inf"): 110.0}
    delta = after[key].minus(before[key])
    assert delta.count == 100 and delta.buckets[0.01] == 50
    # Half the requests under 10 ms, the rest spread linearly up to 100 ms.
    assert quantile(0.5, delta.buckets) == pytest.approx(0.01)
    assert quantile(0.99, delta.buckets) == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 4.0}) == 0.1  # beyond the last bound
    assert quantile(0.5, {}) is None
    assert endpoint_name("GET", "/v1/users/<user_id>/recommendations") == (
        "GET /v1/users/[id]/recommendations"
    )
    grouped = by_endpoint(after)
    assert set(grouped) == {"GET /v1/users/[id]/recommendations", "POST /v1/events"}
    assert set(grouped["POST /v1/events"]) == {"shed"}


def test_counter_resets_count_the_whole_new_value() -> None:
    before = parse(scrape(60, 110, 3.0, 5))
    after = parse(scrape(1, 2, 0.01, 0))
    key = ("GET", "/v1/users/<user_id>/recommendations", "200")
    assert after[key].minus(before[key]).count == 2


def test_server_source_judges_the_window_between_scrapes() -> None:
    scrapes = Scrapes(
        [
            Snapshot(T0, parse(scrape(0, 0, 0.0, 0))),
            Snapshot(T0 + 10, parse(scrape(50, 100, 3.0, 0))),
            Snapshot(T0 + 20, parse(scrape(50, 100, 3.0, 100))),
        ]
    )
    source = ServerSource(scrapes)
    read = "GET /v1/users/[id]/recommendations"

    def value(text: str, endpoint=None, window=(T0, T0 + 20)):
        return source.value(parse_expr(text), endpoint, window)

    assert value("p(50) < 1", read) == pytest.approx(10.0)
    assert value("avg < 1", read) == pytest.approx(30.0)
    assert value("rps > 1", read, (T0, T0 + 10)) == pytest.approx(10.0)
    assert value("shed_ratio < 1") == pytest.approx(0.5)
    assert value("fail_ratio < 1") == 0.0
    assert value("count > 1", window=(T0 + 10, T0 + 20)) == 100  # only the sheds happened then
    assert source.endpoints((T0, T0 + 20)) == [read, "POST /v1/events"]
    assert ServerSource(Scrapes([])).value(parse_expr("p(99) < 1"), None, (T0, T0 + 1)) is None
    # Sheds alone: all 100 answered under 10 ms; none in the first window.
    assert value("shed_p(99) < 50ms") == pytest.approx(0.01 * 99 / 100 * 1000)
    assert value("shed_p(99) < 50ms", window=(T0, T0 + 10)) is None


def test_shed_latency_is_kept_apart_and_travels_with_the_timeline(tmp_path: Path) -> None:
    worker = Timeline()
    for i in range(100):
        worker.record(T0, "POST /w", 200.0 + i)  # served, slowly
        worker.record(T0, "POST /w", 2.0 + i % 3, outcome="shed")  # shed at once
    master = Timeline()
    master.merge_rows(json.loads(json.dumps(worker.pop_rows())))  # as a worker report
    master.write_jsonl(tmp_path / "timeline.jsonl")
    cell = Timeline.read_jsonl(tmp_path / "timeline.jsonl").window(T0, T0 + 1).cells["POST /w"]
    assert cell.shed == 100 and cell.shed_hist.n == 100 and cell.hist.n == 200
    assert cell.shed_hist.percentile(99) == 4.0 and cell.hist.percentile(99) > 290
    expr = parse_expr("shed_p(99) < 50ms")
    assert (expr.metric, expr.label, expr.is_latency) == ("shed_p", "shed_p(99)", True)
    results = load_results(tmp_path).sources["locust"]
    assert results.value(expr, None, (T0, T0 + 1)) == 4.0
    assert results.value(parse_expr("p(99) < 1s"), None, (T0, T0 + 1)) > 290


def test_retries_and_refused_retries_travel_with_the_timeline_and_feed_rules(tmp_path) -> None:
    worker = Timeline()
    for _ in range(10):
        worker.record(T0, "GET /r", 3.0, "shed")  # first attempts, shed
    for _ in range(4):
        worker.record(T0, "GET /r", 3.0, "shed", retry=True)
    for _ in range(6):
        worker.refuse(T0, "GET /r")  # the budget said no: never sent
    worker.refuse(T0 + 1, "POST /w")  # a second with refusals and no request of that endpoint
    worker.record(T0 + 1, "GET /r", 3.0)
    master = Timeline()
    master.merge_rows(json.loads(json.dumps(worker.pop_rows())))  # as a worker report
    master.write_jsonl(tmp_path / "timeline.jsonl")
    master.write_csv(tmp_path / "timeline.csv")
    cell = Timeline.read_jsonl(tmp_path / "timeline.jsonl").window(T0, T0 + 1).cells["GET /r"]
    assert (cell.hist.n, cell.shed, cell.retry, cell.refused) == (14, 14, 4, 6)
    with open(tmp_path / "timeline.csv") as fh:
        first = next(csv.DictReader(fh))
    assert (first["retries"], first["retries_refused"]) == ("4", "6")
    locust = load_results(tmp_path).sources["locust"]

    def value(text: str, endpoint=None, window=(T0, T0 + 2)):
        return locust.value(parse_expr(text), endpoint, window)

    assert value("retry_count <= 4") == 4 and value("retry_refused_count == 0") == 7
    assert value("retry_ratio <= 0.5") == pytest.approx(4 / 11)  # retries per first attempt
    assert value("retry_refused_count == 0", "POST /w") == 1
    assert value("retry_count == 0", "POST /w") == 0 and value("retry_ratio < 1", "POST /w") is None
    assert value("retry_count == 0", window=(T0 + 1, T0 + 2)) == 0


def write_run(root: Path) -> None:
    tl = Timeline()
    for s in range(10):
        tl.set_meta(T0 + s, users=1, offered_rps=2.0)
        tl.record(T0 + s, "GET /a", 10.0)
        tl.record(T0 + s, "GET /a", 20.0)
    tl.write_jsonl(root / "timeline.jsonl")
    with open(root / "server_metrics.jsonl", "w") as fh:
        for t, n in ((T0, 0), (T0 + 10, 20)):
            fh.write(json.dumps(Snapshot(t, parse(scrape(n, n, n * 0.005, 0))).to_dict()) + "\n")
    (root / "phases.json").write_text(json.dumps({"fault": [T0 + 5, T0 + 10]}))
    (root / "run.json").write_text(json.dumps({"profile": "steady"}))
    (root / "audit.json").write_text(json.dumps({"lost_count": 0, "drained": True}))
    (root / "benchmark.json").write_text(
        json.dumps(
            {
                "machine_info": {},
                "benchmarks": [
                    {
                        "name": "test_rank",
                        "stats": {"mean": 0.0015, "median": 0.001, "ops": 650.0},
                        "extra_info": {"ratio": 0.8},
                    },
                ],
            }  # fmt: skip
        )
    )
    (root / "contract-junit.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="GET /a"/><testcase name="POST /b"><failure message="x"/></testcase>'
        '<testcase name="GET /c"><skipped/></testcase></testsuite></testsuites>'
    )
    (root / "pipeline.json").write_text(json.dumps({"outbox_age_p99_s": 0.4}))


def test_a_results_directory_feeds_every_source(tmp_path: Path) -> None:
    write_run(tmp_path)
    results = load_results(tmp_path)
    assert results.profile == "steady" and results.phases == {"fault": (T0 + 5, T0 + 10)}
    assert set(results.sources) >= {
        "locust",
        "server",
        "audit",
        "benchmark",
        "contract",
        "pipeline",
    }
    ruleset = parse_rules(
        """
[[rule]]
expr = ["p(50) == 10", "count == 20", "rps == 2"]
[[rule]]
phase = "fault"
expr = "count == 10"
[[rule]]
source = "server"
scope = "/v1/users/[id]/recommendations"
expr = ["count == 20", "p(99) <= 10"]
[[rule]]
source = "audit"
expr = ["lost_count == 0", "drained == 1"]
[[rule]]
source = "benchmark"
scope = "test_rank"
expr = ["mean < 2ms", "med < 0.002", "ratio >= 0.75", "ops > 500"]
[[rule]]
source = "contract"
expr = ["failures == 1", "passed == 1", "fail_ratio == 0.5"]
[[rule]]
source = "pipeline"
expr = "outbox_age_p99_s < 2"
""",
        "g.toml",
    )
    verdict = check_dir(tmp_path, ruleset)
    assert [r for r in verdict.results if r.status != "pass"] == []
    assert verdict.profile == "steady" and len(verdict.results) == 16


def test_an_unreadable_source_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "audit.json").write_text("{not json")
    ruleset = parse_rules('[[rule]]\nsource = "audit"\nexpr = "lost == 0"\n', "g.toml")
    with pytest.raises(GuardrailError, match="audit.json: unreadable JSON"):
        check_dir(tmp_path, ruleset)
    with pytest.raises(GuardrailError, match="results directory not found"):
        load_results(tmp_path / "nope")


def test_locust_stats_history_csv_is_a_fallback_source(tmp_path: Path) -> None:
    header = (
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
        "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
        "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
        "Total Average Content Size"
    )
    rows = [header]
    for s in range(1, 11):
        pct = "10,10,10,10,10,10,10,90,90,90,90"
        rows.append(f"{T0 + s},5,GET,/a,10,0,{pct},{s * 10},{1 if s >= 5 else 0},10,12,5,90,100")
        rows.append(
            f"{T0 + s},5,,Aggregated,10,0,{pct},{s * 10},{1 if s >= 5 else 0},10,12,5,90,100"
        )
    (tmp_path / "locust_stats_history.csv").write_text("\n".join(rows) + "\n")
    ruleset = parse_rules(
        '[[rule]]\nscope = "GET /a"\nphase = "all"\nexpr = ["count == 100", "fail_count == 1",'
        ' "p(50) == 10", "p(99.5) == 90", "fail_ratio == 0.01", "rps == 10"]\n',
        "g.toml",
    )
    verdict = check_dir(tmp_path, ruleset)
    assert [r.observed for r in verdict.results] == [100, 1, 10, 90, 0.01, 10]


def test_a_500_is_counted_apart_from_the_other_failures() -> None:
    def text(ok: int, gateway: int, bug: int) -> str:
        lines = []
        for status, n in (("202", ok), ("504", gateway), ("500", bug)):
            labels = f'method="POST",path="/v1/events",status="{status}"'
            lines += [
                f'{FAMILY}_bucket{{le="+Inf",{labels}}} {n}',
                f"{FAMILY}_count{{{labels}}} {n}",
                f"{FAMILY}_sum{{{labels}}} {n * 0.01}",
            ]
        return "\n".join(lines) + "\n"

    source = ServerSource(
        Scrapes([Snapshot(T0, parse(text(0, 0, 0))), Snapshot(T0 + 10, parse(text(96, 3, 1)))])
    )

    def value(expr: str) -> float | None:
        return source.value(parse_expr(expr), None, (T0, T0 + 10))

    assert value("fail_count < 1") == 4 and value("fail_ratio < 1") == pytest.approx(0.04)
    assert value("error_500_count == 0") == 1
    assert value("error_ratio < 1") == pytest.approx(0.04)


def test_the_500_count_needs_the_server_source() -> None:
    with pytest.raises(GuardrailError, match='needs source = "server"'):
        parse_rules('[[rule]]\nexpr = "error_500_count == 0"\n')
    assert parse_rules('[[rule]]\nsource = "server"\nexpr = "error_500_count == 0"\n').rules


def test_a_junit_file_where_no_test_ran_has_no_fail_ratio(tmp_path: Path) -> None:
    (tmp_path / "contract-junit.xml").write_text('<testsuite name="st" tests="0" failures="0"/>')
    ruleset = parse_rules(
        '[[rule]]\nsource = "contract"\nexpr = "fail_ratio == 0"\n'
        '[[rule]]\nname = "r"\nsource = "contract"\nrequired = true\nexpr = "fail_ratio == 0"\n',
        "g.toml",
    )
    statuses = [r.status for r in check_dir(tmp_path, ruleset).results]
    assert statuses == ["skipped", "breach"]
