"""`demo`: the main job: bring the stack up, run a short load/chaos run, print the verdict."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import click

from harness.stack import Stack, StackError, default_state_dir


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run directory")
@click.option("--keep-up/--down-after", default=True, help="leave the stack running afterwards")
def command(out: str | None, keep_up: bool) -> int:
    """Start the stack, run the smoke load profile with a short fault, print the verdict."""
    stack = Stack(default_state_dir())
    try:
        stack.up(log=click.echo)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    run_dir = Path(out or f"runs/demo-{dt.datetime.now():%Y%m%d-%H%M%S}")
    code = _run_main_job(stack, run_dir)
    for row in stack.status():
        click.echo(f"{row['name']:<9} {row['state']:<8} {row.get('url') or ''}")
    if not keep_up:
        stack.down(log=click.echo)
    else:
        click.echo("stack left running: `reco-harness down` stops it")
    return code


def _run_main_job(stack: Stack, run_dir: Path) -> int:
    """Run the chaos smoke experiment when available, else the smoke load profile, else smoke."""
    from harness.cli import main

    api = stack.state["components"].get("api", {}).get("url")
    if importlib.util.find_spec("harness.commands.chaos") is not None:
        return main(
            ["chaos", "run", "smoke-db-blip", "--duration-scale", "1", "--out", str(run_dir)]
        )
    if importlib.util.find_spec("harness.commands.load") is not None:
        return main(
            ["load", "run", "--profile", "smoke", "--out", str(run_dir)]
            + (["--url", api] if api else [])
        )
    if importlib.util.find_spec("harness.commands.smoke") is not None:
        return main(["smoke", "--write"] + (["--url", api] if api else []))
    click.echo("stack is up; no load/chaos command is installed yet")
    return 0
