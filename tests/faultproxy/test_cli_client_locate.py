"""The command line, the harness command, the thin client and the server locator."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
import requests
from click.testing import CliRunner
from faultproxy_support import connect, listen_port, roundtrip

from chaos.faultproxy import VERSION, client, locate
from chaos.faultproxy.cli import main
from harness.commands.toxiproxy_server import command


def test_version_flag_in_go_and_gnu_forms(capsys):
    for flag in ("-version", "--version", "-version=true"):
        assert main([flag]) == 0
        assert capsys.readouterr().out == f"toxiproxy-server version {VERSION}\n"


def test_bad_port_is_a_usage_error(capsys):
    assert main(["-port", "eighty"]) == 2


def test_harness_command_passes_go_flags_through():
    result = CliRunner().invoke(command, ["-host", "127.0.0.1", "-version"])
    assert result.exit_code == 0
    assert result.output == f"toxiproxy-server version {VERSION}\n"


def test_config_file_is_populated_at_start(tmp_path, echo_server):
    config = tmp_path / "config.json"
    entries = [
        {"name": "from_config", "listen": "127.0.0.1:0", "upstream": echo_server.address},
        {"name": "no_listen", "upstream": echo_server.address},  # Go's ":0"
    ]
    config.write_text(json.dumps(entries))
    argv = [sys.executable, "-m", "chaos.faultproxy", "-config", str(config)]
    server = locate.start_server(argv, "faultproxy", log_path=str(tmp_path / "log"))
    try:
        with client.Client(server.url) as api:
            proxies = [api.get_proxy(entry["name"]) for entry in entries]
        for proxy in proxies:
            with connect(listen_port(proxy)) as sock:
                roundtrip(sock, b"configured")
    finally:
        server.stop()
    assert server.process.returncode == 0  # SIGTERM is a clean shutdown
    assert "Populated proxies from file" in (tmp_path / "log").read_text()


def test_sigterm_with_open_api_connections_logs_only_json_lines(tmp_path):
    """Stopping must not print asyncio tracebacks for API clients still connected."""
    log = tmp_path / "log"
    server = locate.start_faultproxy(log_path=str(log))
    sessions = [requests.Session() for _ in range(3)]
    try:
        for session in sessions:  # each keeps its connection open after the answer
            assert session.get(f"{server.url}/version", timeout=5).status_code == 200
    finally:
        server.stop()
        for session in sessions:
            session.close()
    assert server.process.returncode == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert "Shutting down" in lines[-1]
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_find_server_prefers_toxiproxy_url(monkeypatch):
    monkeypatch.setenv("TOXIPROXY_URL", "http://127.0.0.1:1/")
    found = locate.find_server()
    assert (found.url, found.kind, found.pid) == ("http://127.0.0.1:1", "external", None)
    found.stop()  # a no-op for servers we did not start


def test_find_server_uses_toxiproxy_server_on_path(monkeypatch, tmp_path):
    fake = tmp_path / "toxiproxy-server"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m chaos.faultproxy "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = locate.find_server()
    try:
        assert found.kind == "go-binary" and locate.is_ready(found.url)
    finally:
        found.stop()
    assert not locate.is_ready(found.url, timeout=0.5)


def test_find_server_falls_back_to_ours(monkeypatch, tmp_path):
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    monkeypatch.setattr(locate.shutil, "which", lambda name: None)
    found = locate.find_server(log_path=str(tmp_path / "log"))
    try:
        assert found.kind == "faultproxy" and found.pid is not None
        assert found.host == "127.0.0.1" and found.port > 0
        with client.Client(found.url) as api:
            assert api.version() == VERSION
    finally:
        found.stop()


def test_thin_client_round_trip(toxiproxy, unique, echo_server):
    name = unique("client")
    with client.Client(toxiproxy.url, timeout=5) as api:
        proxy = api.create_proxy(name, echo_server.address)
        try:
            port = listen_port(proxy)
            with api.toxic(name, "latency", latency=100) as toxic:
                assert toxic["name"] == "latency_downstream"
                assert api.toxics(name)[0]["attributes"] == {"latency": 100, "jitter": 0}
                updated = api.update_toxic(name, "latency_downstream", jitter=5, toxicity=0.5)
                assert updated["attributes"] == {"latency": 100, "jitter": 5}
                assert updated["toxicity"] == 0.5
            assert api.toxics(name) == []
            with api.down(name):
                assert api.get_proxy(name)["enabled"] is False
            with connect(port) as sock:
                roundtrip(sock, b"after down")
            with pytest.raises(client.AlreadyExists):
                api.create_proxy(name, echo_server.address)
            with pytest.raises(client.NotFound):
                api.remove_toxic(name, "nope")
            with pytest.raises(client.BadRequest):
                api.add_toxic(name, "nope")
            populated = api.populate(
                [{"name": name, "listen": proxy["listen"], "upstream": echo_server.address}]
            )
            assert [p["name"] for p in populated] == [name]
            api.reset()
        finally:
            api.delete_proxy(name)
        with pytest.raises(client.NotFound):
            api.get_proxy(name)


@pytest.mark.parametrize("odd", ["a#b", "a?b=1", "a%2Fb", "a b"])
def test_thin_client_escapes_names_in_paths(toxiproxy, unique, echo_server, odd):
    """A name with URL syntax in it reaches its own proxy and toxic, never a cut-off prefix."""
    prefix = unique("c")
    name = prefix + odd
    with client.Client(toxiproxy.url, timeout=5) as api:
        api.create_proxy(prefix, echo_server.address)  # what a name cut at "#" or "?" would hit
        api.create_proxy(name, echo_server.address)
        try:
            assert api.get_proxy(name)["name"] == name
            api.add_toxic(name, "latency", name=odd, latency=5)
            assert api.update_toxic(name, odd, latency=7)["attributes"]["latency"] == 7
            assert [t["name"] for t in api.toxics(name)] == [odd]
            assert api.toxics(prefix) == []
            api.remove_toxic(name, odd)
            assert api.update_proxy(name, enabled=False)["enabled"] is False
        finally:
            api.delete_proxy(name)
            api.delete_proxy(prefix)
        with pytest.raises(client.NotFound):
            api.get_proxy(name)
