"""`toxiproxy-cli`: drive a Toxiproxy-compatible server by hand (chaos.faultproxy.ctl)."""

from __future__ import annotations

import click


@click.command(
    "toxiproxy-cli",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        # No option is click's: -h is the Go CLI's --host, and --help shows its own help.
        "help_option_names": [],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> int:
    """Run toxiproxy-cli commands (list, inspect, create, toggle, delete, toxic) with its flags."""
    from chaos.faultproxy.ctl import main

    return main(list(args))
