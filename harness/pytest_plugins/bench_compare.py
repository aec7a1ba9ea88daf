"""Per-benchmark regression thresholds for ``pytest --benchmark-compare`` (guardrails.toml).

pytest-benchmark's ``--benchmark-compare-fail`` applies one threshold to every benchmark.
With this plugin, a run that compares (``--benchmark-enable --benchmark-compare[=NUM]``) is
judged benchmark by benchmark against the ``bench-micro`` rules of the guardrail file, above a
noise floor (harness/bench/compare.py); any breach makes the session fail with exit code 1
and names the benchmark. Without ``--benchmark-compare`` it does nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from harness import guardrails
from harness.bench import compare

_STATE = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reco benchmark compare")
    group.addoption(
        "--bench-guardrails",
        metavar="FILE",
        help="guardrail file with the per-benchmark thresholds (default: guardrails.toml)",
    )
    group.addoption(
        "--bench-noise-floor",
        type=float,
        default=compare.NOISE_FLOOR,
        metavar="RATIO",
        help=f"slowdown always treated as noise (default {compare.NOISE_FLOOR})",
    )
    group.addoption(
        "--bench-compare-out",
        metavar="DIR",
        help="write benchmark-compare.json, verdict.json and junit.xml here",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark loads the baseline in its own (later) pytest_configure and reports
    # problems (no saved run, other machine) as warnings; -W error would turn them into an
    # INTERNALERROR. Show them as warnings; a missing baseline becomes a usage error below.
    from pytest_benchmark.logger import PytestBenchmarkWarning

    warnings.filterwarnings("default", category=PytestBenchmarkWarning)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    bench_session = getattr(config, "_benchmarksession", None)
    if bench_session is None or bench_session.disabled or not bench_session.compare:
        return
    if not bench_session.compared_mapping:
        raise pytest.UsageError(
            f"--benchmark-compare: no saved baseline for this machine in "
            f"{bench_session.storage}; save one first with --benchmark-enable "
            "--benchmark-autosave"
        )
    path = config.getoption("bench_guardrails") or guardrails.default_path()
    try:
        ruleset = guardrails.load_rules(path)
    except guardrails.GuardrailError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = {"ruleset": ruleset}


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE, None)
    bench_session = getattr(session.config, "_benchmarksession", None)
    if state is None or bench_session is None:
        return
    current = [b.as_dict(include_data=False) for b in bench_session.benchmarks if b]
    if not current:
        return
    # --benchmark-compare=NUM may match several runs: judge against the newest of them.
    path, saved = list(bench_session.compared_mapping.items())[-1]
    report = compare.compare_runs(
        saved.values(),
        current,
        session.config.getoption("bench_noise_floor"),
        (str(path), "this run"),
    )
    verdict = compare.judge(report, state["ruleset"])
    out = session.config.getoption("bench_compare_out")
    if out:
        compare.write(report, verdict, Path(out))
    state.update(report=report, verdict=verdict)
    if verdict.exit_code != guardrails.EXIT_OK and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if not state or "report" not in state:
        return
    verdict = state["verdict"]
    terminalreporter.section("benchmark regressions (guardrails.toml, bench-micro)")
    terminalreporter.write_line(compare.table(state["report"], verdict))
    regressed = sorted({r.target for r in verdict.breaches})
    if regressed:
        terminalreporter.write_line(
            f"PERFORMANCE REGRESSION: {', '.join(regressed)}", red=True, bold=True
        )
    else:
        terminalreporter.write_line("no regression beyond the thresholds", green=True)
