"""Command line of the server, with the Go flags: -host, -port, -config, -version and friends."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from chaos.faultproxy import VERSION

BOOL_FLAGS = ("version", "proxy-metrics", "runtime-metrics", "help")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toxiproxy-server",
        description="Toxiproxy-compatible TCP fault proxy (flags as in toxiproxy-server 2.12).",
        add_help=False,
        allow_abbrev=False,
    )
    parser.add_argument(
        "-host", "--host", default="127.0.0.1", help="host for the API to listen on"
    )
    parser.add_argument("-port", "--port", default="8474", help="API port")
    parser.add_argument("-config", "--config", default="", help="JSON file in /populate format")
    parser.add_argument("-seed", "--seed", default="0", help="accepted for compatibility; unused")
    parser.add_argument(
        "-proxy-metrics",
        "--proxy-metrics",
        action="store_true",
        help="accepted; /metrics is always served",
    )
    parser.add_argument(
        "-runtime-metrics",
        "--runtime-metrics",
        action="store_true",
        help="accepted; /metrics is always served",
    )
    parser.add_argument("-version", "--version", action="store_true", help="print the version")
    parser.add_argument("-h", "-help", "--help", action="help", help="show this help")
    return parser


def _normalise(argv: list[str]) -> list[str]:
    # Go's flag package accepts -flag=true/false for booleans; argparse does not.
    out = []
    for arg in argv:
        name, sep, value = arg.lstrip("-").partition("=")
        if sep and arg.startswith("-") and name in BOOL_FLAGS:
            if value.lower() in ("1", "t", "true"):
                out.append(f"--{name}")
            continue
        out.append(arg)
    return out


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner when it is installed (twice the round-trip rate), else asyncio's.

    FAULTPROXY_LOOP=asyncio forces the standard loop; FAULTPROXY_LOOP=uvloop requires uvloop.
    """
    choice = os.environ.get("FAULTPROXY_LOOP", "auto").strip().lower()
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.run
    return asyncio.run


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; return the exit code."""
    args = _parser().parse_args(_normalise(list(sys.argv[1:] if argv is None else argv)))
    if args.version:
        print(f"toxiproxy-server version {VERSION}")
        return 0
    try:
        port = int(args.port)
    except ValueError:
        print(f"invalid value {args.port!r} for flag -port", file=sys.stderr)
        return 2
    from chaos.faultproxy.server import serve

    try:
        return event_loop_runner()(serve(args.host, port, args.config or None))
    except KeyboardInterrupt:
        return 130
