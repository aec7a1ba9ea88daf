"""`chaos list|run|validate|rollback`: experiments under load with faults, an audit, a verdict."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from harness import guardrails
from harness.stack import Stack, StackError, default_state_dir
from loadtests.shapes import profile_named

# Shared by `run` and `validate`, which must read a scale and a rule file the same way.
DURATION_SCALE = click.option(
    "--duration-scale",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="multiply every time in the experiment (0.1 = ten times shorter)",
)
RULES = click.option(
    "--guardrails",
    "guardrails_file",
    type=click.Path(dir_okay=False),
    help="rule file for experiments that name none (default chaos/guardrails.toml)",
)


@click.group("chaos")
def command() -> None:
    """Run chaos experiments against the local stack wired through fault proxies."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_experiments(as_json: bool) -> int:
    """List the experiment catalogue."""
    from chaos.experiment import catalogue

    experiments = catalogue()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "title": e.title,
                        "scenario": e.scenario,
                        "tags": e.tags,
                        "faults": [s.label for s in e.steps],
                    }
                    for e in experiments
                ],
                indent=2,
            )
        )
        return 0
    for e in experiments:
        click.echo(f"{e.name:<32} #{e.scenario:<3} {e.title}")
    return 0


@command.command("run")
@click.argument("experiments", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="run the whole catalogue")
@DURATION_SCALE
@click.option("--out", type=click.Path(file_okay=False), help="run directory (default runs/…)")
@click.option("--state-dir", type=click.Path(file_okay=False), help="stack state directory")
@click.option("--keep-up", is_flag=True, help="leave a stack this command started running")
@RULES
def run(
    experiments: tuple[str, ...],
    run_all: bool,
    duration_scale: float,
    out: str | None,
    state_dir: str | None,
    keep_up: bool,
    guardrails_file: str | None,
) -> int:
    """Run experiments; exit 0 pass, 1 guardrail breach, 2 error, 3 invariant violated."""
    from chaos.runner import Run

    default_rules = Path(guardrails_file) if guardrails_file else None
    chosen = _chosen(experiments, run_all, default_rules)
    if chosen is None:
        return 2
    stack = Stack(Path(state_dir) if state_dir else default_state_dir())
    # Judge by processes, not readiness: a stack still recovering from the last fault is ours
    # to use, not ours to stop afterwards.
    started_here = not _running(stack)
    # Stopped afterwards only what this run started (deps from `up --deps-only` stay up).
    before = stack.running() if started_here else set()
    try:
        if started_here or _miswired(stack):
            # Starts what is missing and restarts an app that bypasses its fault proxies.
            stack = Stack(stack.state_dir, chaos=True)
            stack.up(log=click.echo)
    except BaseException as exc:
        if started_here:  # a start that failed part way leaves nothing of ours behind
            stack.down(log=click.echo, keep=before)
        if not isinstance(exc, StackError):
            raise
        click.echo(f"error: {exc}", err=True)
        return 2
    base = Path(out or f"runs/chaos-{dt.datetime.now():%Y%m%d-%H%M%S}")
    worst = 0
    rows = [_row(experiment, None, "not started", None) for experiment in chosen]
    try:
        for position, experiment in enumerate(chosen):
            run_dir = base / experiment.name if len(chosen) > 1 else base
            run_dir.mkdir(parents=True, exist_ok=True)
            click.echo(f"== {experiment.name}: {experiment.title} → {run_dir}")
            runner = Run(
                experiment.scaled(duration_scale),
                stack,
                run_dir,
                echo=click.echo,
                guardrails_file=default_rules,
            )
            code = runner.execute()
            _report(run_dir)
            click.echo(f"== {experiment.name}: exit {code}")
            outcome, counted = OUTCOMES.get(code, "error"), code
            if runner.interrupted:
                outcome = "interrupted"
            elif experiment.negative_control and len(chosen) > 1:
                expected = int(experiment.negative_control.get("expect_exit", 3))
                caught = code == expected
                outcome = "caught as expected" if caught else f"NOT caught ({outcome})"
                click.echo(f"   negative control {outcome}")
                counted = 0 if caught else 1
            rows[position] = _row(experiment, code, outcome, run_dir, passed=counted == 0)
            worst = _combine(worst, counted)
            if runner.interrupted:
                # Ctrl-C means stop: not the next experiment of a catalogue on the same stack.
                left = len(chosen) - position - 1
                if left:
                    click.echo(f"interrupted: {left} experiment(s) not started")
                return worst
    finally:
        if len(chosen) > 1:
            _summarise(base, rows)
        if started_here and not keep_up:
            stack.down(log=click.echo, keep=before)
    return worst


@command.command("validate")
@click.argument("experiments", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="validate the whole catalogue")
@DURATION_SCALE
@RULES
def validate(
    experiments: tuple[str, ...], run_all: bool, duration_scale: float, guardrails_file: str | None
) -> int:
    """Check experiment files and their rule files, and print each plan; exit 0 valid, 2 not.

    Nothing starts: no stack, no load, no fault.
    """
    from chaos.runner import guardrails_path

    default_rules = Path(guardrails_file) if guardrails_file else None
    chosen = _chosen(experiments, run_all, default_rules)
    if chosen is None:
        return 2
    for experiment in chosen:
        for line in _plan(
            experiment.scaled(duration_scale), guardrails_path(experiment, default_rules)
        ):
            click.echo(line)
    click.echo(f"valid: {len(chosen)} experiment(s)")
    return 0


def _chosen(experiments: tuple[str, ...], run_all: bool, default_rules: Path | None):
    """The experiments named (or the catalogue), their files and rule files read; None: error."""
    from chaos.experiment import ExperimentError, catalogue, find
    from chaos.runner import guardrails_path

    try:
        chosen = catalogue() if run_all else [find(name) for name in experiments]
    except ExperimentError as exc:
        click.echo(f"error: {exc}", err=True)
        return None
    if not chosen:
        click.echo(
            "error: name an experiment or pass --all (see `reco-harness chaos list`)", err=True
        )
        return None
    try:
        # Caught here, not when Locust refuses it after the stack came up and settled.
        for experiment in chosen:
            profile_named(experiment.load_profile)
    except ValueError as exc:
        click.echo(f"error: {experiment.path}: load.profile: {exc}", err=True)
        return None
    try:
        # Judged after the run, so read before it: a typo must not cost a whole experiment.
        for experiment in chosen:
            guardrails.load_rules(guardrails_path(experiment, default_rules))
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return None
    return chosen


def _plan(experiment, rules: Path) -> list[str]:
    """What a run of ``experiment`` would do, in the order it does it."""
    lines = [
        f"== {experiment.name}: {experiment.title}"
        + (f" (scenario #{experiment.scenario})" if experiment.scenario else ""),
        f"   file      {experiment.path}",
        f"   rules     {rules}",
        f"   load      {experiment.load_profile}, {experiment.load_users} users,"
        f" {experiment.load_duration_s:g} s",
    ]
    for probe in experiment.probes:
        where = f" {probe.path}" if probe.type == "http" else ""  # only http probes GET a path
        lines.append(f"   steady    {probe.name} ({probe.type}{where})")
    for step in experiment.steps:
        end = step.start_s + step.duration_s
        phase = f"  phase {step.phase}" if step.phase else ""
        lines.append(f"   fault     {step.start_s:6.1f} s - {end:6.1f} s  {step.label}{phase}")
    control = experiment.negative_control
    if control:
        lines.append(
            f"   control   {control.get('component')} with {control.get('switch')}:"
            f" must exit {control.get('expect_exit', 3)}"
        )
    if experiment.expected_dlq:
        lines.append(f"   expect    {experiment.expected_dlq} dead letter(s)")
    return lines


OUTCOMES = {0: "pass", 1: "guardrail breach", 2: "error", 3: "invariant violated"}


def _row(
    experiment, code: int | None, outcome: str, run_dir: Path | None, passed: bool = False
) -> dict:
    return {
        "experiment": experiment.name,
        "exit": code,
        "outcome": outcome,
        "passed": passed,  # a negative control passes by being caught
        "negative_control": bool(experiment.negative_control),
        "run_dir": str(run_dir) if run_dir else None,
    }


def _summarise(base: Path, rows: list[dict]) -> None:
    """A catalogue's one-look result: a table on stdout and summary.json beside the runs."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "summary.json").write_text(json.dumps({"experiments": rows}, indent=2) + "\n")
    width = max(len(row["experiment"]) for row in rows)
    click.echo(f"\n{'experiment':<{width}}  exit  outcome")
    for row in rows:
        code = "-" if row["exit"] is None else str(row["exit"])
        click.echo(f"{row['experiment']:<{width}}  {code:>4}  {row['outcome']}")
    click.echo(f"summary: {base / 'summary.json'}")
    from harness.report.index import write_index

    click.echo(f"report: {write_index(base, rows)}")


@command.command("rollback")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False))
def rollback(run_dir: str, state_dir: str | None) -> int:
    """Undo every fault a crashed run left applied (the guardian normally does this)."""
    from chaos.actions import Faults
    from chaos.guardian import rollback_open
    from chaos.ledger import Ledger

    ledgers = _ledgers(Path(run_dir))
    if not ledgers:
        click.echo(
            f"error: no {LEDGER} in {run_dir} or the run directories just below it", err=True
        )
        return 2
    undone = left = 0
    faults = Faults(Stack(Path(state_dir) if state_dir else default_state_dir()))
    for path in ledgers:
        ledger = Ledger(path)
        undone += rollback_open(ledger, faults, log=click.echo)
        # A failed undo stays open in the ledger: say so, so that it is not taken as done.
        still_open = len(ledger.open_entries())
        if still_open:
            click.echo(f"error: {still_open} fault(s) still applied ({path})", err=True)
        left += still_open
    click.echo(f"rolled back {undone} fault(s)" + (f", {left} failed" if left else ""))
    return 2 if left else 0


LEDGER = "faults.ledger"


def _ledgers(run_dir: Path) -> list[Path]:
    """The run's ledger, and those of the runs just below it (``chaos run --all --out``)."""
    found = [run_dir / LEDGER] if (run_dir / LEDGER).is_file() else []
    return found + sorted(p for p in run_dir.glob(f"*/{LEDGER}") if p.is_file())


def _combine(worst: int, code: int) -> int:
    """Invariant violations outrank harness errors, which outrank breaches."""
    rank = {0: 0, 1: 1, 2: 2, 3: 3}
    return max(worst, code, key=lambda c: rank.get(c, 2))


def _miswired(stack: Stack) -> bool:
    """Whether the stack lacks live fault proxies or an app bypasses them (never the flag alone)."""
    if not stack.chaos or not stack.toxiproxy_url:
        return True
    # A dead fault proxy took every link with it: the apps reach nothing, and every fault
    # would fail to be injected. `up` starts a new one and moves the apps onto it.
    if stack.fault_proxy_gone():
        return True
    return any(stack.miswired(name) for name in ("api", "relay", "consumer"))


def _running(stack: Stack) -> bool:
    rows = {r["name"]: r["state"] for r in stack.status()}
    names = ("postgres", "rabbitmq", "api", "relay", "consumer")
    return all(rows.get(n) not in (None, "stopped") for n in names)


def _report(run_dir: Path) -> None:
    try:
        from harness.report import write_report
    except ImportError:
        return
    path = write_report(run_dir)
    click.echo(f"report: {path}")
