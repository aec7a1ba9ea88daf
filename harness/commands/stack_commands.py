"""`up`, `down`, `status`: the local stack as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from harness.stack import Stack, StackError

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the stack keeps its files (default: $RECO_HARNESS_DIR or ./.harness)",
)


@click.command("up")
@state_dir_option
@click.option("--deps-only", is_flag=True, help="start PostgreSQL and RabbitMQ only")
@click.option(
    "--chaos", is_flag=True, help="route every client→dependency link through a fault proxy"
)
def up(state_dir: Path | None, deps_only: bool, chaos: bool) -> int:
    """Start PostgreSQL, RabbitMQ, migrate, then the API, relay and consumer."""
    stack = Stack(state_dir, chaos=chaos or None)
    try:
        stack.up(apps=not deps_only, log=click.echo)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    _print_status(stack)
    return 0


@click.command("down")
@state_dir_option
@click.option("--purge", is_flag=True, help="also delete the state dir (databases, logs)")
def down(state_dir: Path | None, purge: bool) -> int:
    """Stop every process the stack started."""
    Stack(state_dir).down(purge=purge, log=click.echo)
    return 0


@click.command("status")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="print components as JSON for scripts")
def status(state_dir: Path | None, as_json: bool) -> int:
    """Show what runs where; exit 1 if a recorded component is not ready."""
    stack = Stack(state_dir)
    rows = stack.status()
    if as_json:
        click.echo(json.dumps({"state_dir": str(stack.state_dir), "components": rows}, indent=2))
    else:
        _print_status(stack, rows)
    return 0 if all(r["state"] in ("ready", "external") for r in rows) else 1


def _print_status(stack: Stack, rows: list[dict] | None = None) -> None:
    rows = stack.status() if rows is None else rows
    if not rows:
        click.echo(f"nothing running (state dir {stack.state_dir})")
        return
    for row in rows:
        pid = row.get("pid") or "-"
        click.echo(f"{row['name']:<9} {row['state']:<8} pid={pid:<8} {row.get('url') or ''}")


commands = [up, down, status]
