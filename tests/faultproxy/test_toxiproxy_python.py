"""The calls toxiproxy-python 0.1.1 makes, driven through that client."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator

import pytest
import requests
from faultproxy_support import API_TIMEOUT, connect, listen_port, roundtrip
from toxiproxy import Toxiproxy
from toxiproxy import api as toxiproxy_api
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists


def _with_timeout(call):
    def wrapped(*args, **kwargs):
        kwargs.setdefault("timeout", API_TIMEOUT)
        return call(*args, **kwargs)

    return wrapped


@pytest.fixture
def client(toxiproxy, api, monkeypatch, unique) -> Iterator[tuple[Toxiproxy, list[str]]]:
    """A toxiproxy-python client aimed at the server under test, and names to clean up."""
    # The client never sets timeouts; give its requests calls one without changing its logic.
    shim = types.SimpleNamespace(
        get=_with_timeout(requests.get),
        post=_with_timeout(requests.post),
        delete=_with_timeout(requests.delete),
    )
    monkeypatch.setattr(toxiproxy_api, "requests", shim)
    server = Toxiproxy()
    server.update_api_consumer(toxiproxy.host, toxiproxy.port)
    names: list[str] = []
    yield server, names
    for name in names:
        api.delete(f"/proxies/{name}")


def test_running_and_version(client):
    server, _ = client
    assert server.running() is True
    assert re.fullmatch(rb'\{"version": "\d+\.\d+\.\d+"\}\n', server.version())


def test_create_list_get_and_destroy(client, unique, echo_server):
    server, names = client
    name = unique("py")
    names.append(name)
    proxy = server.create(upstream=echo_server.address, name=name)
    assert proxy.name == name and proxy.enabled is True
    assert re.fullmatch(r"127\.0\.0\.1:\d+", proxy.listen)
    assert name in server.proxies()
    assert server.get_proxy(name).upstream == echo_server.address
    assert server.get_proxy("absent-" + name) is None
    with pytest.raises(ProxyExists):
        server.create(upstream=echo_server.address, name=name)
    with connect(int(proxy.listen.rsplit(":", 1)[1])) as sock:
        roundtrip(sock, b"through toxiproxy-python")
    assert server.destroy(proxy) is True
    with pytest.raises(NotFound):
        proxy.destroy()


def test_create_disabled_keeps_client_side_listen(client, unique, echo_server):
    server, names = client
    name = unique("py")
    names.append(name)
    proxy = server.create(upstream=echo_server.address, name=name, enabled=False)
    assert proxy.enabled is False and proxy.listen == "127.0.0.1:0"


def test_toxics_add_list_remove_and_errors(client, unique, echo_server):
    server, names = client
    name = unique("py")
    names.append(name)
    proxy = server.create(upstream=echo_server.address, name=name)
    assert proxy.add_toxic(type="latency", attributes={"latency": 100}) is None
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 10_000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "bandwidth_upstream"}
    assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 0}
    assert proxy.get_toxic("latency_downstream").type == "latency"
    with connect(int(proxy.listen.rsplit(":", 1)[1])) as sock:
        assert roundtrip(sock, b"slow") >= 0.098
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", name="other", stream="sideways")
    assert proxy.destroy_toxic("latency_downstream") is True
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")
    assert set(proxy.toxics()) == {"bandwidth_upstream"}


def test_disable_enable_and_down(client, unique, echo_server):
    server, names = client
    name = unique("py")
    names.append(name)
    proxy = server.create(upstream=echo_server.address, name=name)
    port = int(proxy.listen.rsplit(":", 1)[1])
    proxy.disable()
    assert proxy.enabled is False
    with pytest.raises(ConnectionRefusedError):
        connect(port, timeout=2).close()
    proxy.enable()
    with connect(port) as sock:
        roundtrip(sock, b"back")
    with proxy.down(), pytest.raises(ConnectionRefusedError):
        connect(port, timeout=2).close()
    with connect(port) as sock:
        roundtrip(sock, b"up again")


def test_reset(client, unique, echo_server, api):
    server, names = client
    name = unique("py")
    names.append(name)
    proxy = server.create(upstream=echo_server.address, name=name)
    proxy.add_toxic(type="latency", attributes={"latency": 50})
    proxy.disable()
    assert server.reset() is True
    assert proxy.toxics() == {}
    assert api.get(f"/proxies/{name}").json()["enabled"] is True


def test_unknown_proxy_maps_to_not_found(client):
    server, _ = client
    with pytest.raises(NotFound):
        toxiproxy_api.APIConsumer.get("/proxies/definitely-not-there/toxics")


def test_port_in_use_surfaces_as_key_error(client, unique, make_proxy, echo_server):
    # The server answers 500 with an error object; the client then fails building a Proxy.
    server, names = client
    taken = make_proxy()["listen"]
    name = unique("py")
    names.append(name)
    with pytest.raises(KeyError, match="name"):
        server.create(upstream=echo_server.address, name=name, listen=taken)


def test_client_side_populate(client, unique, echo_server):
    server, names = client
    entries = [{"name": unique("pp"), "upstream": echo_server.address, "listen": "127.0.0.1:0"}]
    names.append(entries[0]["name"])
    created = server.populate(entries)
    assert [p.name for p in created] == [entries[0]["name"]]
    assert listen_port({"listen": created[0].listen}) > 0
