"""toxiproxy-cli: drive our fault proxy, or any Toxiproxy 2.x server, as the 2.12 Go CLI does."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import requests

from chaos.faultproxy import VERSION
from chaos.faultproxy.client import Client, ToxiproxyError
from chaos.faultproxy.ctlflags import Flags, encodable, parse_attributes, parse_go_float
from chaos.faultproxy.ctltext import TOXIC_DESCRIPTION, group_help
from chaos.faultproxy.ctlview import Style, render_inspect, render_list, render_toggled

DEFAULT_HOST = "http://localhost:8474"
TIMEOUT = 30.0  # the Go client's HTTP timeout
HELP_WORDS = ("help", "h")
T = TypeVar("T")


class Failure(Exception):
    """An error the Go CLI reports on stderr, exiting 1 (3 for an unknown command)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Session:
    client: Client
    style: Style
    out: TextIO


@dataclass(frozen=True)
class Command:
    """A command under its names; a group has subcommands instead of a run function."""

    names: tuple[str, ...]
    summary: str
    flags: Callable[[str], Flags] | None = None
    run: Callable[[Session, argparse.Namespace, Flags], None] | None = None
    group: tuple[Command, ...] = ()
    description: str = ""


def _attempt(call: Callable[[], T], context: str) -> T:
    """Run one API call; on failure raise the Go CLI's message: the context, then the cause."""
    try:
        return call()
    except ToxiproxyError as exc:
        cause = f"HTTP {exc.status}: {exc.message}"
    except requests.RequestException as exc:
        cause = f"fail to request: {_reason(exc)}"
    except ValueError as exc:  # a value JSON cannot carry, refused before sending as in Go
        cause = str(exc)
    raise Failure(f"{context}: {cause}")


def _reason(exc: requests.RequestException) -> str:
    """Go's shape, `Get "URL": reason`, with the operating system's words where there are any."""
    where = ""
    if exc.request is not None:
        where = f'{str(exc.request.method).title()} "{exc.request.url}": '
    cause: BaseException | None = exc
    for _ in range(10):  # a bounded walk down the chain to the socket error
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return where + cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return where + type(exc).__name__


def _proxy_name(args: argparse.Namespace, flags: Flags, message: str) -> str:
    if not args.proxy or not args.proxy[0]:
        print(flags.help(), end="")
        raise Failure(message)
    return str(args.proxy[0])  # further arguments are ignored, as Go's First() does


def _named(args: argparse.Namespace, flags: Flags) -> str:
    return _proxy_name(args, flags, "Proxy name is required as the first argument.")


def _required(value: str | None, name: str, flags: Flags) -> str:
    if not value:
        print(flags.help(), end="")
        raise Failure(f"Required argument '{name}' was empty.")
    return value


def _toxicity(text: str | None, default: float | None) -> float | None:
    """The --toxicity value, default when not given; Go accepts 0 to 1 in ParseFloat syntax."""
    if not text:
        return default
    value = parse_go_float(text)
    if value is None or not 0 <= value <= 1:
        raise Failure("toxicity should be a float between 0 and 1.")
    return value


def _retrieve(session: Session, name: str, context: str = "") -> dict[str, Any]:
    """The proxy; the toxic commands look it up first too, as the Go client does."""
    context = context or f"Failed to retrieve proxy {name}"
    return _attempt(lambda: session.client.get_proxy(name), context)


def _find_proxy(session: Session, name: str, failed: str) -> None:
    _retrieve(session, name, f"{failed}failed to retrieve proxy with name `{name}`")


# -- proxy commands ----------------------------------------------------------------------------


def _list(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    proxies = _attempt(session.client.proxies, "Failed to retrieve proxies")
    session.out.write(render_list(proxies, session.style))


def _inspect(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    session.out.write(render_inspect(_retrieve(session, _named(args, flags)), session.style))


def _create(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _named(args, flags)
    listen = _required(args.listen, "listen", flags)
    upstream = _required(args.upstream, "upstream", flags)
    _attempt(
        lambda: session.client.create_proxy(name, upstream, listen),
        "Failed to create proxy: Create",
    )
    session.out.write(f"Created new proxy {name}\n")


def _toggle(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _named(args, flags)
    enabled = not _retrieve(session, name)["enabled"]
    _attempt(
        lambda: session.client.update_proxy(name, enabled=enabled),
        f"Failed to toggle proxy {name}",
    )
    session.out.write(render_toggled(name, enabled, session.style))


def _delete(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _named(args, flags)
    _retrieve(session, name)
    _attempt(lambda: session.client.delete_proxy(name), "Failed to delete proxy: Delete")
    session.out.write(f"Deleted proxy {name}\n")


# -- toxic commands ----------------------------------------------------------------------------


def _toxic_add(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _proxy_name(args, flags, "Proxy name is missing.")
    type_ = _required(args.type, "type", flags)
    if args.upstream and args.downstream:
        raise Failure("Only one should be specified: upstream or downstream.")
    toxic = {
        "name": args.toxicName or "",  # empty: the server names it <type>_<stream>
        "type": type_,
        "stream": "upstream" if args.upstream else "downstream",
        "toxicity": _toxicity(args.toxicity, 1.0),
        "attributes": parse_attributes(args.attribute or []),
    }
    failed = "Failed to add toxic: "
    _find_proxy(session, name, failed)
    added = _attempt(
        lambda: session.client.create_toxic(name, encodable(toxic)),
        f"{failed}failed to add toxic to proxy {name}: AddToxic",
    )
    session.out.write(
        f"Added {added['stream']} {added['type']} toxic '{added['name']}' on proxy '{name}'\n"
    )


def _toxic_update(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _proxy_name(args, flags, "Proxy name is missing.")
    toxic_name = _required(args.toxicName, "toxicName", flags)
    changes: dict[str, Any] = {"attributes": parse_attributes(args.attribute or [])}
    toxicity = _toxicity(args.toxicity, None)
    if toxicity is not None:  # left out, the toxic keeps its toxicity
        changes["toxicity"] = toxicity
    failed = "Failed to update toxic: "
    _find_proxy(session, name, failed)
    updated = _attempt(
        lambda: session.client.patch_toxic(name, toxic_name, encodable(changes)),
        f"{failed}failed to update toxic '{toxic_name}' of proxy '{name}'",
    )
    session.out.write(f"Updated toxic '{updated['name']}' on proxy '{name}'\n")


def _toxic_remove(session: Session, args: argparse.Namespace, flags: Flags) -> None:
    name = _proxy_name(args, flags, "Proxy name is missing.")
    toxic_name = _required(args.toxicName, "toxicName", flags)
    failed = "Failed to remove toxic: "
    _find_proxy(session, name, failed)
    _attempt(
        lambda: session.client.remove_toxic(name, toxic_name),
        f"{failed}failed to remove toxic '{toxic_name}' from proxy '{name}'",
    )
    session.out.write(f"Removed toxic '{toxic_name}' on proxy '{name}'\n")


# -- flags -------------------------------------------------------------------------------------


def _flags(prog: str, usage: str) -> Flags:
    flags = Flags(prog, usage)
    flags.add("help", action="help", help="show help")
    flags.parser.add_argument("proxy", nargs="*", metavar="<proxyName>", help=argparse.SUPPRESS)
    return flags


def _proxy_flags(usage: str) -> Callable[[str], Flags]:
    return lambda prog: _flags(prog, f"{prog} {usage}".rstrip())


def _create_flags(prog: str) -> Flags:
    flags = _flags(prog, f"{prog} --listen <addr> --upstream <addr> <proxyName>")
    flags.add("listen", "l", metavar="<addr>", help="proxy will listen on this address")
    flags.add("upstream", "u", metavar="<addr>", help="proxy will forward to this address")
    return flags


def _toxic_flags(prog: str, usage: str, name_only: bool = False) -> Flags:
    flags = _flags(prog, f"{prog} {usage}")
    flags.add("toxicName", "n", metavar="<name>", help="name of the toxic")
    if not name_only:
        flags.add(
            "toxicity",
            "tox",
            metavar="<float>",
            help="toxicity of toxic should be a float between 0 and 1 (default: 1.0)",
        )
        flags.add(
            "attribute",
            "a",
            action="append",
            metavar="<key=value>",
            help="toxic attribute in key=value format (repeatable)",
        )
    return flags


def _add_flags(prog: str) -> Flags:
    usage = "--type <type> [--downstream|--upstream] [--toxicName <name>] [options] <proxyName>"
    flags = _toxic_flags(prog, usage)
    flags.add("type", "t", metavar="<type>", help="type of toxic")
    flags.add("upstream", "u", action="store_true", help="add toxic to upstream")
    flags.add("downstream", "d", action="store_true", help="add toxic to downstream (default)")
    return flags


TOXIC_COMMANDS = (
    Command(("add", "a"), "add a new toxic", _add_flags, _toxic_add),
    Command(
        ("update", "u"),
        "update an enabled toxic",
        lambda prog: _toxic_flags(prog, "--toxicName <name> [options] <proxyName>"),
        _toxic_update,
    ),
    Command(
        ("remove", "r", "delete", "d"),
        "remove an enabled toxic",
        lambda prog: _toxic_flags(prog, "--toxicName <name> <proxyName>", name_only=True),
        _toxic_remove,
    ),
)

COMMANDS = (
    Command(("list", "l", "li", "ls"), "list all proxies", _proxy_flags(""), _list),
    Command(
        ("inspect", "i", "ins"), "inspect a single proxy", _proxy_flags("<proxyName>"), _inspect
    ),
    Command(("create", "c", "new"), "create a new proxy", _create_flags, _create),
    Command(
        ("toggle", "tog"), "toggle enabled status on a proxy", _proxy_flags("<proxyName>"), _toggle
    ),
    Command(("delete", "d"), "delete a proxy", _proxy_flags("<proxyName>"), _delete),
    Command(
        ("toxic", "t"),
        "add, remove or update a toxic",
        group=TOXIC_COMMANDS,
        description=TOXIC_DESCRIPTION,
    ),
)


def _global_flags() -> Flags:
    flags = Flags("toxiproxy-cli", "toxiproxy-cli [global options] command [command options]")
    flags.add("host", "h", default=None, help="toxiproxy host to connect to")
    flags.add("help", action="store_true", help="show help")
    flags.add("version", "v", action="store_true", help="print the version")
    flags.parser.add_argument("words", nargs=argparse.REMAINDER)
    return flags


APP_OPTIONS = (
    (
        "--host value, -h value",
        f'toxiproxy host to connect to (default: "{DEFAULT_HOST}") [$TOXIPROXY_URL]',
    ),
    ("--help", "show help"),
    ("--version, -v", "print the version"),
)


# -- dispatch ----------------------------------------------------------------------------------


def _find(commands: tuple[Command, ...], word: str) -> Command:
    for command in commands:
        if word in command.names:
            return command
    raise Failure(f"No help topic for '{word}'", 3)


def _command_help(command: Command, prog: str) -> str:
    if command.group:
        return group_help(prog, command.summary, command.group, description=command.description)
    assert command.flags is not None
    return command.flags(prog).help()


def _dispatch(
    commands: tuple[Command, ...], words: list[str], prog: str, help_text: str, host: str
) -> int:
    """Run the command words name, or show help, as urfave/cli does for the Go CLI."""
    if not words or words[0] in ("--help", "-help"):
        print(help_text, end="")
        return 0
    word, rest = words[0], words[1:]
    if word in HELP_WORDS:
        if rest:
            command = _find(commands, rest[0])
            print(_command_help(command, f"{prog} {command.names[0]}"), end="")
        else:
            print(help_text, end="")
        return 0
    command = _find(commands, word)
    sub_prog = f"{prog} {command.names[0]}"
    if command.group:
        return _dispatch(command.group, rest, sub_prog, _command_help(command, sub_prog), host)
    assert command.flags is not None and command.run is not None
    flags = command.flags(sub_prog)
    args = flags.parse(rest)
    with Client(host, timeout=TIMEOUT) as client:
        command.run(Session(client, Style.of(sys.stdout), sys.stdout), args, flags)
    return 0


def host_url(flag: str | None) -> str:
    """--host, else TOXIPROXY_URL, else localhost:8474; http:// is added as Go's client does."""
    host = flag or os.environ.get("TOXIPROXY_URL") or DEFAULT_HOST
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def main(argv: list[str] | None = None) -> int:
    """Run one toxiproxy-cli command line; return the exit code."""
    flags = _global_flags()
    try:
        args = flags.parse(list(sys.argv[1:] if argv is None else argv), interspersed=False)
        if args.version:
            print(f"toxiproxy-cli version {VERSION}")
            return 0
        app_help = group_help(
            "toxiproxy-cli",
            "Simulate network and system conditions",
            COMMANDS,
            version=VERSION,
            options=APP_OPTIONS,
        )
        words = [] if args.help else args.words
        return _dispatch(COMMANDS, words, "toxiproxy-cli", app_help, host_url(args.host))
    except Failure as exc:
        print(exc.message, file=sys.stderr)
        return exc.code
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
