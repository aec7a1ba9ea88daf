"""`doctor`: report what is missing on this machine and how to install it."""

from __future__ import annotations

import json

import click

from harness.doctor import render, run_checks


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON")
def command(as_json: bool) -> int:
    """Check the machine; exit 2 when a required component is missing."""
    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        click.echo(render(checks))
    return 2 if any(c.required and not c.ok for c in checks) else 0
