"""Help texts of the command-line client, laid out as urfave/cli lays out the Go CLI's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TOXIC_DESCRIPTION = """\
Toxics and their attributes (key=value; times in milliseconds unless noted):
  latency     delay data by latency, give or take jitter    latency, jitter
  bandwidth   cap the rate                                  rate (KB/s)
  slow_close  hold the close back                           delay
  timeout     stop all data, close after timeout (0: never) timeout
  reset_peer  close with a TCP reset, after timeout         timeout
  slicer      cut data into pieces, pausing between them    average_size, size_variation
                                                            (bytes), delay (microseconds)
  limit_data  close once this many bytes have passed        bytes

Flags come before the proxy name, as in the Go CLI:
  toxiproxy-cli toxic add -t latency -n slow_db -a latency=100 -a jitter=50 api_postgres
  toxiproxy-cli toxic update -n slow_db -a jitter=25 api_postgres
  toxiproxy-cli toxic delete -n slow_db api_postgres"""

HELP_ROW = (("help", "h"), "show a list of commands or help for one command")


def _rows(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(left) for left, _ in rows) + 2
    return "".join(f"   {left:<{width}}{right}\n" for left, right in rows)


def group_help(
    prog: str,
    summary: str,
    commands: Sequence[Any],
    description: str = "",
    version: str | None = None,
    options: Sequence[tuple[str, str]] = (),
) -> str:
    """A command group's help: name, usage, version, description, commands, options."""
    global_options = "[global options] " if options else ""
    parts = [
        f"NAME:\n   {prog} - {summary}\n",
        f"USAGE:\n   {prog} {global_options}command [command options] [arguments...]\n",
    ]
    if version:
        parts.append(f"VERSION:\n   {version}\n")
    if description:
        parts.append(
            "DESCRIPTION:\n"
            + "".join(f"   {line}".rstrip() + "\n" for line in description.splitlines())
        )
    named = [(", ".join(c.names), c.summary) for c in commands]
    parts.append("COMMANDS:\n" + _rows([*named, (", ".join(HELP_ROW[0]), HELP_ROW[1])]))
    if options:
        parts.append("GLOBAL OPTIONS:\n" + _rows(options))
    return "\n".join(parts)
