"""`bench system|http|compare`: ratio benchmarks and micro-benchmark regression checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from harness import guardrails

ROOT = Path(__file__).resolve().parents[2]


def _out_dir(out: str | None, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(out) if out else ROOT / "runs" / f"{stamp}-{name}"


def _rules(path: str | None) -> guardrails.RuleSet:
    return guardrails.load_rules(Path(path) if path else guardrails.default_path())


@click.group("bench")
def group() -> None:
    """Benchmarks as same-run ratios against bare baselines (docs/performance.md)."""


@group.command("system")
@click.option("--quick", "mode", flag_value="quick", help="CI size: a few minutes")
@click.option("--full", "mode", flag_value="full", help="the full sizes (1e6 backlog, 20 s rounds)")
@click.option("--rounds", type=click.IntRange(1, 20), help="interleaved rounds per ratio")
@click.option("--out", type=click.Path(file_okay=False), help="results directory (default runs/…)")
@click.option("--guardrails", "guardrails_file", type=click.Path(dir_okay=False),
              help="guardrail file (default: guardrails.toml)")  # fmt: skip
@click.option("--gate", type=click.Choice(["alarm", "target"]), default="alarm", show_default=True,
              help="which thresholds decide the exit code")  # fmt: skip
def system_command(
    mode: str | None, rounds: int | None, out: str | None, guardrails_file: str | None, gate: str
) -> int:
    """Run every baseline and component side by side; exit 1 below a gate threshold.

    Writes benchmark-system.json (the guardrails' benchmark source), benchmark-system.md,
    verdict.json/junit.xml for the gate and the other gate's verdict in a subfolder.
    Exit 0 pass, 1 a ratio breached its gate, 2 a section failed or bad usage.
    """
    from harness.bench import report, system

    try:
        ruleset = _rules(guardrails_file)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    directory = _out_dir(out, "bench-system")
    result = system.run(mode or "default", rounds, log=lambda m: click.echo(m, err=True))
    verdicts = {g: report.judge(result, ruleset, g) for g in report.GATES}
    paths = report.write(result, verdicts, gate, directory)
    click.echo(paths["markdown"].read_text())
    click.echo(verdicts[gate].table().rstrip("\n"))
    click.echo(f"results: {directory}")
    if verdicts[gate].exit_code != guardrails.EXIT_OK:
        return verdicts[gate].exit_code
    if result["errors"]:
        click.echo(f"error: sections failed: {', '.join(result['errors'])}", err=True)
        return guardrails.EXIT_USAGE
    return guardrails.EXIT_OK


@group.command("http")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--duration", type=float, default=5.0, show_default=True, help="seconds per wrk run")
@click.option("--connections", type=int, default=16, show_default=True)
@click.option(
    "--worker-class", type=click.Choice(["sync", "gthread"]), help="gunicorn worker class"
)
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    help="gunicorn workers for every app (default: the config's 4; gthread 2)",
)
@click.option("--out", type=click.Path(file_okay=False), help="results directory (default runs/…)")
@click.option("--guardrails", "guardrails_file", type=click.Path(dir_okay=False))
def http_command(
    rounds: int,
    duration: float,
    connections: int,
    worker_class: str | None,
    workers: int | None,
    out: str | None,
    guardrails_file: str | None,
) -> int:
    """B1/B2/B2w against GET recommendations and POST events only; exit 1 below an alarm."""
    from harness.bench import http, report

    try:
        ruleset = _rules(guardrails_file)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    directory = _out_dir(out, "bench-http")
    result = http.run(rounds, duration, connections, worker_class, workers=workers)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "benchmark-http.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = report.judge(result, ruleset, "alarm")
    report.write_run_json(directory, "alarm", verdict)
    guardrails.write_verdict(verdict, directory)
    for name, ratio in result["ratios"].items():
        click.echo(
            f"{name:<8} median {ratio['median']:.3f}  min {ratio['min']:.3f}  "
            f"max {ratio['max']:.3f}{'  NOISY' if ratio['noisy'] else ''}"
        )
    click.echo(json.dumps(result["absolute"]))
    click.echo(verdict.table().rstrip("\n"))
    return verdict.exit_code


@group.command("compare")
@click.argument("baseline", required=False, default="previous")
@click.argument("current", required=False, default="latest")
@click.option("--storage", type=click.Path(file_okay=False), default=".benchmarks",
              show_default=True, help="pytest-benchmark storage")  # fmt: skip
@click.option("--machine-id", help="storage folder (default: this machine and interpreter)")
@click.option("--guardrails", "guardrails_file", type=click.Path(dir_okay=False))
@click.option("--noise-floor", type=float, default=None, help="slowdown always treated as noise")
@click.option("--out", type=click.Path(file_okay=False),
              help="write benchmark-compare.json and the verdict here")  # fmt: skip
def compare_command(
    baseline: str,
    current: str,
    storage: str,
    machine_id: str | None,
    guardrails_file: str | None,
    noise_floor: float | None,
    out: str | None,
) -> int:
    """Compare two saved pytest-benchmark runs with per-benchmark thresholds.

    BASELINE and CURRENT are saved-run numbers (0003), files, ``latest`` or ``previous``
    (default: latest against previous). Exit 1 on a regression, 2 on bad input.
    """
    from harness.bench import compare

    try:
        ruleset = _rules(guardrails_file)
        base_path = compare.find_run(Path(storage), baseline, machine_id)
        current_path = compare.find_run(Path(storage), current, machine_id)
        result = compare.compare_runs(
            compare.load_run(base_path),
            compare.load_run(current_path),
            compare.NOISE_FLOOR if noise_floor is None else noise_floor,
            (base_path.name, current_path.name),
        )
    except (guardrails.GuardrailError, FileNotFoundError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    verdict = compare.judge(result, ruleset)
    if out:
        compare.write(result, verdict, Path(out))
    click.echo(compare.table(result, verdict))
    regressed = sorted({r.target for r in verdict.breaches})
    click.echo(f"PERFORMANCE REGRESSION: {', '.join(regressed)}" if regressed else "no regression")
    return verdict.exit_code


command = group
