"""Relay and consumer speed as ratios to bare baselines measured in the same run.

Run with ``pytest tests/benchmarks/test_workers_bench.py --benchmark-enable``. Every ratio
and absolute number is printed and written to ``.benchmarks/workers.json``; only the alarm
thresholds are asserted (targets below them are reported, the noise of a shared 2-core box
makes them trends rather than gates).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import pytest

from harness.bench import workers as bench

RESULTS: dict[str, object] = {}
OUTPUT = Path(".benchmarks") / "workers.json"
RELAY_N = 20_000
CONSUMER_N = 10_000
ROUNDS = 3

TARGETS = {
    "R_relay": 0.7,
    "relay_events_per_s": 6000,
    "R_consumer": 0.7,
    "e2e_p99_ms": 100,
    "R_backlog_100k_vs_1k": 0.8,
    "R_two_relays": 1.2,
}
ALARMS = {"R_relay": 0.5, "R_consumer": 0.5}


@pytest.fixture
def bench_settings(benchmark, database_url, rabbit_instance):
    """Settings for one benchmark (a fresh database and namespace); skipped when disabled."""
    if benchmark.disabled:
        pytest.skip("benchmarks run with --benchmark-enable")
    if os.environ.get("RECO_BENCH_QUICK"):
        # The quick tier measures every one of these ratios once already, in
        # test_bench_system's run of `reco-harness bench system --quick`, and gates them.
        pytest.skip("RECO_BENCH_QUICK: measured by the quick system benchmark in this tier")
    return bench.bench_settings(database_url, rabbit_instance.url)


def _record(name: str, value: dict, benchmark=None) -> None:
    RESULTS[name] = value
    if benchmark is not None:
        benchmark.extra_info.update(value)
    targets = {k: v for k, v in TARGETS.items() if k in value}
    misses = {
        k: value[k]
        for k, target in targets.items()
        if value[k] is not None and (value[k] > target if k.endswith("_ms") else value[k] < target)
    }
    print(f"\n[{name}] {json.dumps(value, default=str)}")
    if misses:
        print(f"[{name}] BELOW TARGET: {misses} (targets {targets})")
    OUTPUT.parent.mkdir(exist_ok=True)
    report = {"environment": _environment(), "targets": TARGETS, "results": RESULTS}
    OUTPUT.write_text(json.dumps(report, indent=2, default=str))


def _environment() -> dict:
    return {
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _once(benchmark, fn):
    return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


def test_relay_against_a_bare_pipelined_confirm_loop(benchmark, bench_settings):
    messages = bench.messages_for(bench.make_events(RELAY_N))
    bench.bare_publish_pipelined(bench_settings, messages[:2000])  # warm-up, discarded

    def measure():
        return bench.interleaved_ratio(
            lambda: bench.bare_publish_pipelined(bench_settings, messages),
            lambda: bench.relay_drain(bench_settings, RELAY_N),
            rounds=ROUNDS,
        )

    result = _once(benchmark, measure)
    relay_rates = [r["per_s"] for r in result["sut"]]
    per_message = bench.bare_publish_per_message(bench_settings, messages[:1500])
    no_confirm = bench.bare_publish_no_confirm(bench_settings, messages)
    bare_rates = [b["per_s"] for b in result["baseline"]]
    value = {
        "R_relay": result["ratio"],
        "R_relay_min": result["min"],
        "R_relay_max": result["max"],
        "noisy": result["noisy"],
        "relay_events_per_s": statistics.median(relay_rates),
        "B4b_bare_pipelined_per_s": statistics.median(bare_rates),
        "B4a_bare_per_message_per_s": round(per_message.per_s, 1),
        "B4c_bare_no_confirm_per_s": round(no_confirm.per_s, 1),
        "R_batchgain_B4b_over_B4a": round(statistics.median(bare_rates) / per_message.per_s, 2),
        "relay_batch_size": bench_settings.relay_batch_size,
        "rounds": result["rounds"],
        "detail": result,
    }
    _record("relay", value, benchmark)
    assert result["ratio"] >= ALARMS["R_relay"], value


def test_consumer_against_a_bare_consume_insert_commit_loop(benchmark, bench_settings):
    def measure():
        return bench.interleaved_ratio(
            lambda: bench.bare_consume_commit(
                bench_settings, bench.messages_for(bench.make_events(CONSUMER_N))
            ),
            lambda: bench.consumer_drain(
                bench_settings, bench.messages_for(bench.make_events(CONSUMER_N))
            ),
            rounds=ROUNDS,
        )

    result = _once(benchmark, measure)
    value = {
        "R_consumer": result["ratio"],
        "R_consumer_min": result["min"],
        "R_consumer_max": result["max"],
        "noisy": result["noisy"],
        "consumer_events_per_s": statistics.median(r["per_s"] for r in result["sut"]),
        "B5b_bare_consume_commit_per_s": statistics.median(b["per_s"] for b in result["baseline"]),
        "batch_size": bench_settings.consumer_batch_size,
        "prefetch": bench_settings.consumer_prefetch,
        "rounds": result["rounds"],
        "detail": result,
    }
    _record("consumer", value, benchmark)
    assert result["ratio"] >= ALARMS["R_consumer"], value


def test_end_to_end_latency_at_half_relay_capacity(benchmark, bench_settings, tmp_path):
    relay = RESULTS.get("relay")
    capacity = relay["relay_events_per_s"] if isinstance(relay, dict) else None
    if capacity is None:
        capacity = bench.relay_drain(bench_settings, 10_000).per_s
    rate = capacity / 2
    result = _once(benchmark, lambda: bench.e2e_latency(bench_settings, rate, 15, tmp_path))
    value = {"e2e_p99_ms": result["p99_ms"], "relay_capacity_per_s": capacity, **result}
    _record("e2e_latency", value, benchmark)


def test_relay_drain_rate_does_not_degrade_with_backlog_size(benchmark, bench_settings):
    result = _once(benchmark, lambda: bench.backlog_growth(bench_settings, 1_000, 100_000))
    value = {
        "R_backlog_100k_vs_1k": result["R_backlog"],
        "drain_1k_per_s": result["small_per_s"],
        "drain_100k_per_s": result["large_per_s"],
    }
    _record("backlog_growth", value, benchmark)


def test_two_relays_against_one(benchmark, bench_settings, tmp_path):
    n = 30_000

    def measure():
        one = bench.relay_processes_drain(bench_settings, n, 1, tmp_path)
        two = bench.relay_processes_drain(bench_settings, n, 2, tmp_path)
        return one, two

    one, two = _once(benchmark, measure)
    value = {
        "R_two_relays": round(two.per_s / one.per_s, 3),
        "one_relay_per_s": round(one.per_s, 1),
        "two_relays_per_s": round(two.per_s, 1),
    }
    _record("relay_scaling", value, benchmark)
