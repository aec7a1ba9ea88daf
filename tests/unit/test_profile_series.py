"""profile e2e-series: latency per commit window beside CPU in cores per process tree."""

from __future__ import annotations

from harness.bench.profile import Sample, series_rows


def _fields(row: str) -> tuple[str, str, list[float]]:
    """(end of window, 'p50/max' latency, [host, postgres, rabbitmq, rest] cores)."""
    left, right = row.split("|")
    end, latency = left.split(maxsplit=1)
    return end, latency.replace(" ", ""), [float(x) for x in right.split()]


def test_each_window_reports_its_own_commits_and_cpu():
    samples = [
        Sample(100.0, (0, 0), 10.0, 5.0),
        Sample(100.5, (150, 200), 10.4, 5.1),  # 75 % of 2 cores busy
        Sample(101.0, (250, 400), 10.5, 5.1),  # 50 % busy, nothing committed in the window
    ]
    latencies = [(100.1, 0.010), (100.2, 0.030), (100.4, 0.020), (101.0, 9.0)]
    header, first, second = series_rows(samples, latencies, ncpu=2)
    assert "p50/max" in header
    assert _fields(first) == ("0.50", "20/30", [1.5, 0.8, 0.2, 0.5])
    # The commit at 101.0 lies in neither window: each is [start, end).
    assert _fields(second) == ("1.00", "-/-", [1.0, 0.2, 0.0, 0.8])


def test_a_zero_length_window_is_skipped():
    same = Sample(100.0, (0, 0), 0.0, 0.0)
    assert series_rows([same, same], [], ncpu=2) == series_rows([same], [], ncpu=2)
