"""Per-second series and per-endpoint totals from timeline rows and pipeline samples."""

from __future__ import annotations

import pytest

from harness.guardrails.histogram import Histogram
from harness.guardrails.timeline import Timeline
from harness.report import series as S
from harness.report.load import RunData

T = 1_800_000_000
READ, WRITE = "GET /v1/users/[id]/recommendations", "POST /v1/events"


def _cell(latencies_ms: list[float], fail: int = 0, shed: int = 0) -> dict:
    hist = Histogram()
    for ms in latencies_ms:
        hist.add(ms)
    return {**hist.to_dict(), "fail": fail, "shed": shed}


def _timeline() -> Timeline:
    timeline = Timeline()
    timeline.merge_rows(
        [
            {
                "t": T,
                "users": 2,
                "offered_rps": 4.0,
                "endpoints": {READ: _cell([5, 6, 7, 250]), WRITE: _cell([12], fail=1)},
            },
            # second T+1: nothing at all (a stall) - a gap, not a zero, for ratios and latency
            {"t": T + 1, "users": 2, "offered_rps": 4.0, "endpoints": {}},
            {
                "t": T + 2,
                "users": 2,
                "offered_rps": 4.0,
                "endpoints": {
                    READ: {**_cell([1234.0, 8], shed=1), "retry": 1, "refused": 2},
                    WRITE: _cell([20, 30]),
                },
            },
        ]
    )
    return timeline


def test_percentiles_per_second_use_the_recorded_histograms():
    timeline = _timeline()
    p50 = S.latency(timeline, READ, 50)
    p99 = S.latency(timeline, READ, 99)
    assert p50.points == ((T + 0.5, 6.0), (T + 1.5, None), (T + 2.5, 8.0))
    # Locust's rounding: 250 stays 250, 1234 is bucketed to 1200 (two significant digits)
    assert p99.points[0] == (T + 0.5, 250.0) and p99.points[2] == (T + 2.5, 1200.0)
    assert p50.name == "p50"


def test_rps_counts_every_request_and_zero_for_idle_seconds():
    timeline = _timeline()
    assert S.rps(timeline).points == ((T + 0.5, 5.0), (T + 1.5, 0.0), (T + 2.5, 4.0))
    assert [v for _, v in S.rps(timeline, WRITE).points] == [1.0, 0.0, 2.0]
    assert [v for _, v in S.offered(timeline).points] == [4.0, 4.0, 4.0]


def test_error_ratio_counts_failures_and_sheds_and_skips_empty_seconds():
    timeline = _timeline()
    assert [v for _, v in S.error_ratio(timeline, WRITE).points] == [100.0, None, 0.0]
    assert [v for _, v in S.error_ratio(timeline, READ).points] == [0.0, None, 50.0]


def test_offered_is_absent_when_the_timeline_never_recorded_it():
    timeline = Timeline()
    timeline.merge_rows([{"t": T, "endpoints": {READ: _cell([5])}}])
    assert S.offered(timeline) is None


def test_endpoint_totals_merge_seconds_busiest_first_with_an_aggregate():
    rows = S.endpoint_totals(_timeline())
    assert [r["endpoint"] for r in rows] == [READ, WRITE, "Aggregated"]
    read = rows[0]
    assert (read["count"], read["failures"], read["sheds"]) == (6, 0, 1)
    assert read["error_ratio"] == pytest.approx(1 / 6)
    assert read["rps"] == pytest.approx(6 / 3)  # three seconds in the extent
    assert read["p50_ms"] == 7.0 and read["max_ms"] == 1234.0
    assert rows[2]["count"] == 9 and rows[2]["failures"] == 1
    assert (read["retries"], read["retries_refused"]) == (1, 2)
    assert (rows[1]["retries"], rows[2]["retries"], rows[2]["retries_refused"]) == (0, 1, 2)


def test_pipeline_nulls_break_the_line():
    rows = [
        {"t": T + 0.1, "outbox_backlog": 3},
        {"t": T + 1.1, "outbox_backlog": None},
        {"t": T + 2.1, "outbox_backlog": True},
        {"t": T + 3.1},
    ]
    series = S.pipeline(rows, "outbox_backlog", "backlog")
    assert series.points == ((T + 0.1, 3.0), (T + 1.1, None), (T + 2.1, None), (T + 3.1, None))
    assert series.name == "backlog" and S.has_values([series])
    assert not S.has_values([S.pipeline(rows[1:], "outbox_backlog")])


def test_time_domain_spans_the_run_and_everything_sampled_around_it(tmp_path):
    data = RunData(tmp_path, timeline=_timeline())
    assert S.time_domain(data) == (T, T + 3)
    data.phases = {"all": (T - 2.0, T + 3.0), "recovery": (T + 1.0, T + 6.5)}
    data.faults = [{"start": T + 1.0, "end": T + 2.0}]
    data.pipeline = [{"t": T - 5.0}, {"t": T + 8.2}]
    assert S.time_domain(data) == (T - 5.0, T + 8.2)
    data.phases["baseline"] = (T - 7.0, T)  # a chaos baseline may start before Locust's first
    assert S.time_domain(data)[0] == T - 7.0


def test_time_domain_without_a_timeline_uses_whatever_has_times(tmp_path):
    assert S.time_domain(RunData(tmp_path)) is None
    data = RunData(tmp_path, faults=[{"start": T + 4.0, "end": T + 9.0}])
    assert S.time_domain(data) == (T + 4.0, T + 9.0)


def test_long_runs_are_drawn_in_windows_that_merge_histograms_exactly():
    timeline = Timeline()
    seconds = S.MAX_POINTS * 2 + 1  # needs 3-second windows
    timeline.merge_rows(
        {"t": T + i, "offered_rps": 6.0, "endpoints": {READ: _cell([10.0 * (i % 3 + 1)] * (i % 3))}}
        for i in range(seconds)
    )
    width = S.bucket_seconds(timeline)
    assert width == 3
    rps = S.rps(timeline, READ, width)
    assert len(rps.points) == 801 <= S.MAX_POINTS  # 2401 s in 3-second windows
    assert rps.points[0] == (T + 1.5, 1.0)  # 0 + 1 + 2 requests over 3 s
    assert rps.points[-1] == (T + seconds - 0.5, 0.0)  # the last window is one second long
    p99 = S.latency(timeline, READ, 99, width)
    assert p99.points[0] == (T + 1.5, 30.0)  # max of the merged 20, 30, 30 ms samples
    assert S.offered(timeline, width).points[0] == (T + 1.5, 6.0)


def test_long_pipelines_keep_their_spikes_and_average_their_rates():
    rows = [{"t": T + i, "backlog": 100 if i == 7 else 1, "applied": 10} for i in range(3000)]
    backlog = S.pipeline(rows, "backlog")
    assert len(backlog.points) <= S.MAX_POINTS + 1 and max(backlog.values) == 100
    assert set(S.pipeline(rows, "applied", agg="mean").values) == {10.0}
