"""The `reco-harness` command line; subcommands live in harness/commands/*.py."""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys
import threading
from typing import cast

import click

import harness.commands

# Exit codes shared by every harness command (DESIGN.md).
EXIT_OK, EXIT_BREACH, EXIT_USAGE, EXIT_INVARIANT = 0, 1, 2, 3


def _module_commands(module_name: str) -> list[click.Command]:
    module = importlib.import_module(module_name)
    found = list(getattr(module, "commands", []))
    if getattr(module, "command", None) is not None:
        found.append(module.command)
    return found


class LazyGroup(click.Group):
    """A group that collects `command`/`commands` from every harness/commands module."""

    def _all(self) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for info in pkgutil.iter_modules(harness.commands.__path__):
            if not info.name.startswith("_"):
                for command in _module_commands(f"harness.commands.{info.name}"):
                    found[cast(str, command.name)] = command
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._all()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._all().get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reco-harness")
def cli() -> None:
    """Run the reco stack, load, chaos and checks (exit 0 pass, 1 breach, 2 error, 3 invariant)."""


def _terminate(_signum, _frame) -> None:
    # SIGTERM (a CI timeout, `kill PID`) takes the Ctrl-C path: every command's cleanup runs
    # (a stack it started is stopped, faults are rolled back) and the exit code is 2.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point that maps click's usage errors (and interruptions) to exit code 2."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)  # only the main thread may set handlers (and gets the signals)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _main(argv: list[str] | None) -> int:
    try:
        result = cli.main(args=argv, prog_name="reco-harness", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
