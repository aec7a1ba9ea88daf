"""The host's busy share, read from /proc/stat, for the benchmarks' CPU-bound checks."""

from __future__ import annotations

from harness.bench import cpu


def test_busy_share_is_busy_over_total_between_two_readings():
    assert cpu.busy_share((100, 400), (250, 600)) == 0.75
    assert cpu.busy_share((100, 400), (100, 400)) == 0.0  # no time passed: not a division


def test_the_host_reading_counts_busy_time_within_the_total():
    busy, total = cpu.host_busy()
    assert 0 < busy < total
    later = cpu.host_busy()
    sum(i * i for i in range(200_000))  # keep a core busy for a moment
    assert 0 <= cpu.busy_share(later, cpu.host_busy()) <= 1
