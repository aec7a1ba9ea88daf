"""`migrate`: run the migrations runner against the stack's database."""

from __future__ import annotations

import os

import click

from harness.stack import Stack, default_state_dir


@click.command("migrate", context_settings={"ignore_unknown_options": True})
@click.argument("action", type=click.Choice(["up", "check", "status", "lint"]), default="up")
@click.option("--database-url", default=None, help="default: RECO_DATABASE_URL or the local stack")
def command(action: str, database_url: str | None) -> int:
    """Apply, check, list or lint migrations (python -m migrations)."""
    from migrations.__main__ import main

    argv = [action]
    if action != "lint":
        url = database_url or os.environ.get("RECO_DATABASE_URL")
        if not url:
            try:
                url = Stack(default_state_dir()).database_url()
            except KeyError:
                raise click.UsageError(
                    "no database: run `reco-harness up` or set RECO_DATABASE_URL"
                ) from None
        argv += ["--database-url", url]
    return main(argv)
