"""`demo`: the main job: the stack up, a smoke check, a load run with a fault, the verdict."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from harness.stack import Stack, StackError, default_state_dir


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run directory")
@click.option(
    "--experiment",
    default="smoke-db-blip",
    show_default=True,
    help="chaos experiment to run under load",
)
@click.option(
    "--keep-up/--down-after",
    default=True,
    help="leave the stack running afterwards (--down-after stops only what the demo started)",
)
def command(out: str | None, experiment: str, keep_up: bool) -> int:
    """Start the stack with fault proxies, smoke-check it, run a chaos experiment under load."""
    from harness.cli import main

    stack = Stack(default_state_dir(), chaos=True)
    before = _pids(stack)  # what already ran: --down-after leaves it running
    try:
        stack.up(log=click.echo)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    # An app that ran without fault proxies was restarted through them: the demo's to stop.
    kept = {name for name, pid in _pids(stack).items() if before.get(name) == pid}
    run_dir = Path(out or f"runs/demo-{dt.datetime.now():%Y%m%d-%H%M%S}")
    click.echo("\n== smoke check (writes tagged smoke-* events through the whole pipeline)")
    smoke = main(["smoke", "--write", "--timeout", "30"])
    click.echo(f"\n== chaos experiment {experiment} under load → {run_dir}")
    chaos = main(
        ["chaos", "run", experiment, "--out", str(run_dir), "--state-dir", str(stack.state_dir)]
    )
    click.echo("")
    stack = Stack(stack.state_dir)  # as the chaos run left it (a process fault restarts apps)
    for row in stack.status():
        click.echo(f"{row['name']:<9} {row['state']:<8} {row.get('url') or ''}")
    if keep_up:
        click.echo("stack left running: `.venv/bin/reco-harness down` stops it")
    else:
        stack.down(log=click.echo, keep=kept)
        if kept:
            click.echo(f"left running, as before the demo: {', '.join(sorted(kept))}")
    code = chaos if chaos else smoke
    verdict = {0: "PASS", 1: "BREACH", 2: "ERROR", 3: "INVARIANT VIOLATED"}.get(code, str(code))
    report = run_dir / "report.html"
    click.echo(
        f"\nverdict: {verdict} (exit {code})"
        + (f" — open {report}" if report.exists() else f" — results in {run_dir}")
    )
    return code


def _pids(stack: Stack) -> dict[str, int | None]:
    """Each running component's pid."""
    components = stack.state.get("components", {})
    return {name: components[name].get("pid") for name in stack.running()}
