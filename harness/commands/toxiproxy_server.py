"""`toxiproxy-server`: run the Toxiproxy-compatible fault proxy (chaos.faultproxy)."""

from __future__ import annotations

import click


@click.command(
    "toxiproxy-server",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        # Only --help is click's; -h, -host and the other Go-style flags pass through.
        "help_option_names": ["--help"],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> int:
    """Run the fault proxy with toxiproxy-server flags (-host, -port, -config, -version)."""
    from chaos.faultproxy.cli import main

    return main(list(args))
