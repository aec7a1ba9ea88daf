"""The toxiproxy-cli-compatible client (chaos.faultproxy.ctl) against the server under test."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from faultproxy_support import connect, listen_port, roundtrip

from chaos.faultproxy import VERSION, locate
from chaos.faultproxy.ctl import main
from chaos.faultproxy.ctlflags import parse_attributes
from chaos.faultproxy.ctlview import Style, go_number, render_inspect, render_list
from harness.cli import main as harness_main
from harness.commands.toxiproxy_cli import command

ROOT = Path(__file__).resolve().parents[2]
HINT_LIST = "\nHint: inspect toxics with `toxiproxy-cli inspect <proxyName>`\n"


@dataclass
class Run:
    code: int
    out: str
    err: str


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def ctl(toxiproxy, capsys, monkeypatch):
    """Run the client in-process against the server under test (-h given unless host=False)."""
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)

    def run(*argv: str, host: bool = True) -> Run:
        code = main((["-h", toxiproxy.url] if host else []) + list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def names(api, unique):
    """Names for proxies the client creates; each is deleted after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(unique("ctl"))
        return made[-1]

    yield make
    for name in made:
        api.delete(f"/proxies/{name}")


def toxics_of(api, proxy: str) -> dict[str, dict]:
    return {toxic["name"]: toxic for toxic in api.get(f"/proxies/{proxy}/toxics").json()}


# -- help, version, usage ----------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-version", "-v", "--v"])
def test_version(ctl, flag):
    assert ctl(flag, host=False) == Run(0, f"toxiproxy-cli version {VERSION}\n", "")


def test_help_in_every_form(ctl):
    app_help = ctl(host=False)
    assert app_help.code == 0 and "list, l, li, ls" in app_help.out
    assert "remove, r, delete, d" not in app_help.out and "[$TOXIPROXY_URL]" in app_help.out
    for argv in (["--help"], ["-help"], ["help"], ["h"]):
        assert ctl(*argv, host=False) == app_help
    create = ctl("help", "create", host=False)
    assert create.code == 0 and "--listen <addr>, -l <addr>" in create.out
    assert ctl("create", "--help") == create
    toxic = ctl("toxic")
    assert toxic.code == 0 and "remove, r, delete, d" in toxic.out and "latency" in toxic.out
    assert ctl("t", "--help") == toxic == ctl("help", "t", host=False)
    add = ctl("toxic", "help", "add")
    assert add.code == 0 and "--toxicity <float>, -tox <float>" in add.out
    assert ctl("t", "a", "-help") == add


@pytest.mark.parametrize(
    "argv", [["nope"], ["toxic", "nope"], ["help", "nope"], ["t", "h", "nope"]]
)
def test_unknown_commands_exit_3_as_go(ctl, argv):
    assert ctl(*argv) == Run(3, "", "No help topic for 'nope'\n")


@pytest.mark.parametrize("argv", [["list", "--bogus"], ["list", "-h", "x"], ["-h"]])
def test_usage_errors_exit_2(ctl, argv):
    run = ctl(*argv, host=False)
    assert run.code == 2 and "usage: toxiproxy-cli" in run.err


# -- proxies -----------------------------------------------------------------------------------

CREATE_FORMS = [
    ("create", "-l", "-u"),
    ("c", "--listen", "--upstream"),
    ("new", "-listen", "--u"),
]


@pytest.mark.parametrize(("word", "listen", "upstream"), CREATE_FORMS)
def test_create_then_list_in_every_spelling(ctl, names, api, echo_server, word, listen, upstream):
    name = names()
    created = ctl(word, listen, "127.0.0.1:0", f"{upstream}={echo_server.address}", name)
    assert created == Run(0, f"Created new proxy {name}\n", "")
    proxy = api.get(f"/proxies/{name}").json()
    with connect(listen_port(proxy)) as sock:
        roundtrip(sock, b"through a proxy the client made")
    line = f"{name}\t{proxy['listen']}\t{echo_server.address}\tenabled\t0"
    for alias in ("list", "l", "li", "ls"):
        listed = ctl(alias)
        assert listed.code == 0 and line in listed.out.splitlines()
        # Not a terminal: no header, no hint, no colour, a count rather than "None".
        assert "Name" not in listed.out and "Hint" not in listed.out and "\x1b" not in listed.out


def test_toggle_closes_and_reopens_the_listener(ctl, make_proxy, api):
    proxy = make_proxy()
    name, port = proxy["name"], listen_port(proxy)
    assert ctl("toggle", name) == Run(0, f"Proxy {name} is now disabled\n", "")
    assert api.get(f"/proxies/{name}").json()["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        connect(port, timeout=2).close()
    assert ctl("tog", name) == Run(0, f"Proxy {name} is now enabled\n", "")
    with connect(port) as sock:
        roundtrip(sock, b"enabled again")


@pytest.mark.parametrize("word", ["delete", "d"])
def test_delete(ctl, make_proxy, api, word):
    name = make_proxy()["name"]
    assert ctl(word, name) == Run(0, f"Deleted proxy {name}\n", "")
    assert api.get(f"/proxies/{name}").status_code == 404
    gone = f"Failed to retrieve proxy {name}: HTTP 404: proxy not found\n"
    assert ctl(word, name) == Run(1, "", gone)


def test_proxy_errors_print_the_server_message_and_exit_1(ctl, make_proxy, echo_server):
    name = make_proxy()["name"]
    for word in ("inspect", "i", "ins", "toggle"):
        expected = "Failed to retrieve proxy nope_ctl: HTTP 404: proxy not found\n"
        assert ctl(word, "nope_ctl") == Run(1, "", expected)
    duplicate = ctl("create", "-l", "127.0.0.1:0", "-u", echo_server.address, name)
    assert duplicate == Run(
        1, "", "Failed to create proxy: Create: HTTP 409: proxy already exists\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect"], "Proxy name is required as the first argument."),
        (["toggle"], "Proxy name is required as the first argument."),
        (["delete"], "Proxy name is required as the first argument."),
        (["create", "-u", "127.0.0.1:9"], "Proxy name is required as the first argument."),
        (["create", "-u", "127.0.0.1:9", "x"], "Required argument 'listen' was empty."),
        (["create", "-l", "127.0.0.1:0", "x"], "Required argument 'upstream' was empty."),
        (["toxic", "add", "-t", "latency"], "Proxy name is missing."),
        (["toxic", "add", "x"], "Required argument 'type' was empty."),
        (["toxic", "update", "-n", "t"], "Proxy name is missing."),
        (["toxic", "update", "x"], "Required argument 'toxicName' was empty."),
        (["toxic", "remove", "x"], "Required argument 'toxicName' was empty."),
    ],
)
def test_missing_arguments_show_help_and_exit_1(ctl, argv, message):
    run = ctl(*argv)
    assert (run.code, run.err) == (1, message + "\n")
    assert run.out.startswith("usage: toxiproxy-cli ")


# -- toxics ------------------------------------------------------------------------------------


def test_toxic_add_streams_names_toxicity_and_attributes(ctl, make_proxy, api):
    name = make_proxy()["name"]
    added = ctl("toxic", "add", "-t", "latency", "-a", "latency=100", "-a", "jitter=5", name)
    assert added == Run(
        0, f"Added downstream latency toxic 'latency_downstream' on proxy '{name}'\n", ""
    )
    assert ctl("t", "a", "-u", "--type", "latency", name).out == (
        f"Added upstream latency toxic 'latency_upstream' on proxy '{name}'\n"
    )
    argv = ["-upstream=false", "-d", "-n", "slow", "-type=slow_close", "-tox", "0.25"]
    assert ctl("t", "a", *argv, "--attribute", "delay=7", "-a", "ignored", name).code == 0
    argv = ["--toxicName", "cap", "-t", "bandwidth", "--toxicity", "0", "-a", "rate=1000000"]
    assert ctl("toxic", "a", *argv, name).code == 0
    toxics = toxics_of(api, name)
    assert toxics["latency_downstream"]["attributes"] == {"latency": 100, "jitter": 5}
    assert toxics["latency_downstream"]["toxicity"] == 1
    assert toxics["latency_upstream"]["stream"] == "upstream"
    assert toxics["slow"] == {
        "name": "slow",
        "type": "slow_close",
        "stream": "downstream",
        "toxicity": 0.25,
        "attributes": {"delay": 7},
    }
    assert toxics["cap"]["toxicity"] == 0 and toxics["cap"]["attributes"] == {"rate": 1000000}
    inspected = ctl("inspect", name)
    lines = {line.split("\t", 1)[0]: line for line in inspected.out.splitlines()}
    assert lines["cap"] == (
        "cap\ttype=bandwidth\tstream=downstream\ttoxicity=0.00\tattributes=[\trate=1e+06\t]"
    )
    assert lines["latency_downstream"] == (
        "latency_downstream\ttype=latency\tstream=downstream\ttoxicity=1.00"
        "\tattributes=[\tjitter=5\tlatency=100\t]"
    )
    assert ctl("i", name) == ctl("ins", name) == inspected
    listed = [line for line in ctl("ls").out.splitlines() if line.startswith(name + "\t")]
    assert listed[0].endswith("\tenabled\t4")


def test_latency_added_by_the_client_delays_real_traffic(ctl, make_proxy):
    proxy = make_proxy()
    assert ctl("toxic", "add", "-t", "latency", "-a", "latency=150", proxy["name"]).code == 0
    with connect(listen_port(proxy)) as sock:
        assert roundtrip(sock, b"slow") >= 0.15


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-t", "latency", "-u", "-d"], "Only one should be specified: upstream or downstream."),
        (["-t", "latency", "-tox", "1.5"], "toxicity should be a float between 0 and 1."),
        (["-t", "latency", "-tox", "-0.1"], "toxicity should be a float between 0 and 1."),
        (["-t", "latency", "--toxicity", "half"], "toxicity should be a float between 0 and 1."),
        (["-t", "latency", "-a", "latency=inf"], "{add}json: unsupported value: +Inf"),
        (["-t", "nope"], "{add}HTTP 400: invalid toxic type"),
        (["-t", "latency", "-a", "latency=1.5"], "{add}HTTP 400: bad request body: "),
    ],
)
def test_toxic_add_errors_exit_1_and_add_nothing(ctl, make_proxy, api, argv, message):
    name = make_proxy()["name"]
    run = ctl("toxic", "add", *argv, name)
    add = f"Failed to add toxic: failed to add toxic to proxy {name}: AddToxic: "
    assert run.code == 1 and run.out == "" and run.err.startswith(message.format(add=add))
    assert toxics_of(api, name) == {}


def test_toxic_errors_name_the_proxy_or_toxic(ctl, make_proxy, add_toxic):
    name = make_proxy()["name"]
    add_toxic(name, "latency", name="lat")
    retrieve = "failed to retrieve proxy with name `nope_ctl`: HTTP 404: proxy not found\n"
    assert ctl("t", "a", "-t", "latency", "nope_ctl").err == "Failed to add toxic: " + retrieve
    assert ctl("t", "u", "-n", "lat", "nope_ctl").err == "Failed to update toxic: " + retrieve
    assert ctl("t", "r", "-n", "lat", "nope_ctl").err == "Failed to remove toxic: " + retrieve
    exists = ctl("t", "a", "-t", "latency", "-n", "lat", name)
    assert exists.err == (
        f"Failed to add toxic: failed to add toxic to proxy {name}: AddToxic: "
        "HTTP 409: toxic already exists\n"
    )
    assert ctl("t", "u", "-n", "gone", name) == Run(
        1,
        "",
        f"Failed to update toxic: failed to update toxic 'gone' of proxy '{name}': "
        "HTTP 404: toxic not found\n",
    )
    assert ctl("t", "r", "-n", "gone", name) == Run(
        1,
        "",
        f"Failed to remove toxic: failed to remove toxic 'gone' from proxy '{name}': "
        "HTTP 404: toxic not found\n",
    )


def test_toxic_update_merges_and_keeps_toxicity_unless_given(ctl, make_proxy, api, add_toxic):
    name = make_proxy()["name"]
    add_toxic(name, "latency", name="lat", toxicity=0.5, attributes={"latency": 100})
    updated = ctl("toxic", "update", "-n", "lat", "-a", "jitter=25", name)
    assert updated == Run(0, f"Updated toxic 'lat' on proxy '{name}'\n", "")
    toxic = toxics_of(api, name)["lat"]
    assert (toxic["toxicity"], toxic["attributes"]) == (0.5, {"latency": 100, "jitter": 25})
    assert ctl("t", "u", "--toxicName", "lat", "-tox", "0.75", "-a", "latency=50", name).code == 0
    toxic = toxics_of(api, name)["lat"]
    assert (toxic["toxicity"], toxic["attributes"]) == (0.75, {"latency": 50, "jitter": 25})
    bad = ctl("t", "u", "-n", "lat", "-tox", "2", name)
    assert bad == Run(1, "", "toxicity should be a float between 0 and 1.\n")


def test_toxic_remove_in_every_spelling(ctl, make_proxy, api, add_toxic):
    name = make_proxy()["name"]
    words = ("remove", "r", "delete", "d")
    for word in words:
        add_toxic(name, "noop", name=word)
    for word in words:
        # Flags may also follow the proxy name (the Go CLI would take them as arguments).
        argv = ["-n", word, name] if word in ("remove", "r") else [name, "-n", word]
        assert ctl("toxic", word, *argv) == Run(
            0, f"Removed toxic '{word}' on proxy '{name}'\n", ""
        )
    assert toxics_of(api, name) == {}


# -- host --------------------------------------------------------------------------------------


def test_host_from_flag_env_or_default(ctl, toxiproxy, monkeypatch, make_proxy):
    name = make_proxy()["name"]
    dead = f"http://127.0.0.1:{locate.free_port()}"
    bare = toxiproxy.url.split("://", 1)[1]
    for argv in (["--host", toxiproxy.url], [f"-host={toxiproxy.url}"], ["-h", bare]):
        assert ctl(*argv, "inspect", name, host=False).code == 0
    monkeypatch.setenv("TOXIPROXY_URL", toxiproxy.url)
    assert ctl("inspect", name, host=False).code == 0
    monkeypatch.setenv("TOXIPROXY_URL", dead)
    refused = ctl("list", host=False)
    assert refused.code == 1
    reason = f'fail to request: Get "{dead}/proxies": connection refused'
    assert refused.err == f"Failed to retrieve proxies: {reason}\n"
    assert ctl("-h", toxiproxy.url, "inspect", name, host=False).code == 0  # the flag wins


# -- terminal output ---------------------------------------------------------------------------

PROXY = {
    "name": "pg",
    "listen": "127.0.0.1:5433",
    "upstream": "127.0.0.1:5432",
    "enabled": True,
    "toxics": [],
}
LATENCY = {
    "name": "lat",
    "type": "latency",
    "stream": "downstream",
    "toxicity": 0.5,
    "attributes": {"latency": 100, "jitter": 0},
}


def test_terminal_list_layout_as_go():
    plain = Style(tty=True, colour=False)
    header = "Name\t\t\tListen\t\tUpstream\t\tEnabled\t\tToxics\n" + "=" * 86 + "\n"
    row = "pg\t\t\t127.0.0.1:5433\t127.0.0.1:5432\t\tenabled\t\tNone\n"
    assert render_list({"pg": PROXY}, plain) == header + row + HINT_LIST
    empty = header + "no proxies\n\nHint: create a proxy with `toxiproxy-cli create`\n"
    assert render_list({}, plain) == empty
    coloured = render_list({"pg": PROXY}, Style(tty=True, colour=True))
    assert coloured.startswith("\x1b[32mName\t\t\t\x1b[34mListen")
    assert "\x1b[32mpg\x1b[0m\t\t\t\x1b[34m127.0.0.1:5433\x1b[0m\t" in coloured


def test_terminal_inspect_layout_as_go():
    proxy = {**PROXY, "toxics": [LATENCY]}
    assert render_inspect(proxy, Style(tty=True, colour=False)) == (
        "Name: pg\tListen: 127.0.0.1:5433\tUpstream: 127.0.0.1:5432\n"
        + "=" * 70
        + "\nUpstream toxics:\nProxy has no Upstream toxics enabled.\n\nDownstream toxics:\n"
        "lat:\ttype=latency\tstream=downstream\ttoxicity=0.50\tattributes=[\tjitter=0\tlatency=100\t]\n"
        "\nHint: add a toxic with `toxiproxy-cli toxic add`\n"
    )
    assert "Proxy has no toxics enabled.\n" in render_inspect(PROXY, Style(tty=True, colour=False))


def test_colour_on_a_terminal_unless_no_color(ctl, make_proxy, monkeypatch):
    name = make_proxy()["name"]
    for no_color, expected in (("", f"\x1b[31m{name}\x1b[0m"), ("1", name)):
        monkeypatch.setenv("NO_COLOR", no_color)
        terminal = Terminal()
        monkeypatch.setattr(sys, "stdout", terminal)
        assert ctl("toggle", name).code == 0
        assert terminal.getvalue().startswith(f"Proxy {expected} is now ")
        listed = Terminal()
        monkeypatch.setattr(sys, "stdout", listed)
        assert ctl("toggle", name).code == 0 and ctl("list").code == 0
        text = listed.getvalue()
        assert text.endswith(HINT_LIST.lstrip("\n")) and ("\x1b" in text) is (no_color == "")


# -- parsing -----------------------------------------------------------------------------------


def test_attributes_parse_as_go_parsefloat():
    pairs = ["a=100", "b=1.5", "c=abc", "d=1e3", "e=0x1p4", "f=1e400", "g=x=y", "h", "i=-7", "j="]
    parsed = parse_attributes(pairs)
    assert parsed == {
        "a": 100,
        "b": 1.5,
        "c": "abc",
        "d": 1000,
        "e": 16,
        "f": "1e400",  # out of range: Go keeps the text
        "g": "x=y",
        "i": -7,
        "j": "",
    }
    assert json.dumps(parsed["a"]) == "100" and isinstance(parsed["d"], int)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (100, "100"),
        (0.5, "0.5"),
        (123456, "123456"),
        (1000000, "1e+06"),
        (1234567, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.000015, "1.5e-05"),
        (-2.5, "-2.5"),
        (0, "0"),
        ("slow", "slow"),
    ],
)
def test_attribute_values_print_as_go_fmt(value, text):
    assert go_number(value) == text


# -- entry points ------------------------------------------------------------------------------


def test_harness_command_passes_everything_through(toxiproxy, make_proxy, capsys):
    name = make_proxy()["name"]
    result = CliRunner().invoke(command, ["-h", toxiproxy.url, "inspect", name])
    assert (result.exit_code, result.output) == (0, "")  # no toxics: nothing to print
    result = CliRunner().invoke(command, ["--version"])
    assert result.output == f"toxiproxy-cli version {VERSION}\n"
    assert CliRunner().invoke(command, ["--help"]).output.startswith("NAME:\n   toxiproxy-cli")
    # reco-harness returns the command's exit code (click's standalone mode would drop it).
    assert harness_main(["toxiproxy-cli", "-h", toxiproxy.url, "inspect", "nope_ctl"]) == 1
    assert "HTTP 404: proxy not found" in capsys.readouterr().err


def test_runs_as_a_module_with_toxiproxy_url(toxiproxy, make_proxy):
    name = make_proxy()["name"]
    env = {"TOXIPROXY_URL": toxiproxy.url, "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "chaos.faultproxy.ctl"]
    listed = subprocess.run(
        [*argv, "list"], capture_output=True, text=True, env=env, timeout=30, cwd=ROOT
    )
    assert listed.returncode == 0 and any(
        line.startswith(name + "\t") for line in listed.stdout.splitlines()
    )
    missing = subprocess.run(
        [*argv, "i", "nope_ctl"], capture_output=True, text=True, env=env, timeout=30, cwd=ROOT
    )
    assert missing.returncode == 1 and "HTTP 404: proxy not found" in missing.stderr
