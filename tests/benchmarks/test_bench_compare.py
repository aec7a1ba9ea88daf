"""The micro-benchmark tier fails on a regression beyond its guardrail threshold, and only then.

The comparison rules are checked directly; the acceptance test runs pytest-benchmark in a
subprocess against a private storage: save a baseline, compare an unchanged run (passes,
within three attempts), compare a run with a sleep patched into ``service.ranking.rank``
(fails and names that benchmark). It needs ``--benchmark-enable``, like every benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import guardrails
from harness.bench import compare
from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
SELECTION = "test_rank_pool_of_200 or test_fingerprint_event_batch"
UNCHANGED_ATTEMPTS = 3
SLOWDOWN_PLUGIN = '''
"""Slow service.ranking.rank down by 1 ms per call (a deliberate regression)."""
import time

from service import ranking

_rank = ranking.rank


def _slow_rank(*args, **kwargs):
    time.sleep(0.001)
    return _rank(*args, **kwargs)


ranking.rank = _slow_rank
'''


def stats(median_us: float, min_us: float | None = None, iqr_us: float = 0.0) -> dict:
    return {
        "stats": {
            "median": median_us / 1e6,
            "min": (min_us if min_us is not None else median_us) / 1e6,
            "iqr": iqr_us / 1e6,
        }
    }


def test_contention_that_moves_only_the_median_is_not_a_regression():
    values = compare.compare_one(stats(100, 95), stats(160, 96))
    assert values["slowdown"] == pytest.approx(96 / 95, rel=1e-3)
    assert values["regression"] == 0


def test_a_slowdown_of_every_round_is_a_regression_beyond_the_noise():
    values = compare.compare_one(stats(100, 95, iqr_us=10), stats(150, 143, iqr_us=10))
    assert values["noise"] == pytest.approx(0.1)
    assert values["regression"] == pytest.approx(min(143 / 95, 150 / 100) - 1 - 0.1, abs=1e-3)


def test_the_noise_floor_absorbs_small_slowdowns():
    assert compare.compare_one(stats(100), stats(104))["regression"] == 0
    assert compare.compare_one(stats(100), stats(104), noise_floor=0.01)["regression"] > 0


def test_each_benchmark_is_judged_by_its_own_threshold_and_only_if_it_ran():
    ruleset = guardrails.parse_rules(
        textwrap.dedent(
            """
            [[rule]]
            source = "benchmark"
            scope = "fast"
            expr = "regression < 10%"
            profiles = ["bench-micro"]

            [[rule]]
            source = "benchmark"
            scope = "slow_io"
            expr = "regression < 50%"
            profiles = ["bench-micro"]

            [[rule]]
            source = "benchmark"
            scope = "not_run_now"
            expr = "regression < 10%"
            profiles = ["bench-micro"]
            """
        )
    )
    baseline = [{"name": "fast", **stats(10)}, {"name": "slow_io", **stats(1000)}]
    current = [
        {"name": "fast", **stats(13)},
        {"name": "slow_io", **stats(1300)},
        {"name": "new_one", **stats(5)},
    ]
    report = compare.compare_runs(baseline, current)
    verdict = compare.judge(report, ruleset)
    assert [r.target for r in verdict.breaches] == ["fast"]
    assert {r.target for r in verdict.results} == {"fast", "slow_io"}
    assert report["without_baseline"] == ["new_one"]
    assert "REGRESSION" in compare.table(report, verdict)


def test_every_micro_benchmark_has_a_threshold():
    source = (ROOT / "tests/benchmarks/test_micro.py").read_text()
    names = {line[4:].split("(")[0] for line in source.splitlines() if line.startswith("def test_")}
    scopes = {r.scope for r in compare.micro_rules(guardrails.load_rules(ROOT / "guardrails.toml"))}
    assert names == scopes


def test_bench_compare_command_exits_1_on_a_regression(tmp_path, capsys):
    machine = tmp_path / "Linux-test"
    machine.mkdir()
    run = {"machine_info": {}, "commit_info": {}, "datetime": "", "version": "5.3"}
    for number, median in (("0001", 356.0), ("0002", 1400.0)):
        benchmarks = [
            {"name": "test_rank_pool_of_200", **stats(median)},
            {"name": "test_fingerprint_event_batch", **stats(1.5)},
        ]
        (machine / f"{number}_x.json").write_text(json.dumps({**run, "benchmarks": benchmarks}))
    argv = ["bench", "compare", "--storage", str(tmp_path), "--machine-id", "Linux-test"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert "PERFORMANCE REGRESSION: test_rank_pool_of_200" in printed
    assert (tmp_path / "out/benchmark-compare.json").exists()
    assert main([*argv, "0001", "0001"]) == 0
    assert main([*argv, "0009"]) == 2


def _inner_pytest(storage: Path, *extra: str, env: dict | None = None):
    argv = [
        sys.executable, "-m", "pytest", "tests/benchmarks/test_micro.py", "-k", SELECTION,
        "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest",
        "-p", "harness.pytest_plugins.bench_compare",
        "--benchmark-enable", f"--benchmark-storage={storage}", "--benchmark-max-time=0.5",
        *extra,
    ]  # fmt: skip
    return subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_benchmark_tier_fails_on_an_injected_slowdown(request, tmp_path):
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("benchmarks run with --benchmark-enable")
    storage = tmp_path / "storage"
    saved = _inner_pytest(storage, "--benchmark-autosave")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert compare.saved_runs(storage), saved.stdout

    # A neighbour on a shared machine can slow every round of one short run (its minimum
    # moved 1.4x once, with nothing changed), or every run after the baseline for a while
    # (2x, three attempts in a row). A false positive of the comparison itself repeats on
    # every attempt; contention does not: each retry first saves a fresh baseline, which
    # --benchmark-compare then takes as the latest.
    attempts = []
    for attempt in range(UNCHANGED_ATTEMPTS):
        if attempt:
            resaved = _inner_pytest(storage, "--benchmark-autosave")
            assert resaved.returncode == 0, resaved.stdout + resaved.stderr
        unchanged = _inner_pytest(storage, "--benchmark-compare")
        attempts.append(unchanged.stdout + unchanged.stderr)
        if unchanged.returncode == 0:
            break
    assert unchanged.returncode == 0, "\n\n".join(attempts)
    assert "no regression beyond the thresholds" in unchanged.stdout

    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "reco_slowdown.py").write_text(SLOWDOWN_PLUGIN)
    pythonpath = os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
    out = tmp_path / "compare"
    slowed = _inner_pytest(
        storage,
        "-p",
        "reco_slowdown",
        "--benchmark-compare",
        f"--bench-compare-out={out}",
        env={"PYTHONPATH": pythonpath},
    )
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    regression_line = slowed.stdout.split("PERFORMANCE REGRESSION: ")[1].splitlines()[0]
    assert "test_rank_pool_of_200" in regression_line.split(", ")
    # The injected millisecond multiplies the rank benchmark several times over; the
    # untouched benchmark beside it moves only by run-to-run noise (a 1 ms sleep there
    # would be a slowdown of hundreds). Judging it by its ratio, not by its own threshold,
    # keeps a noisy machine from failing this test.
    scopes = json.loads((out / "benchmark-compare.json").read_text())["scopes"]
    assert scopes["test_rank_pool_of_200"]["slowdown"] > 2.0
    assert scopes["test_fingerprint_event_batch"]["slowdown"] < 2.0
