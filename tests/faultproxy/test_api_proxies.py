"""HTTP API conformance: transport, routing, proxies, populate and reset."""

from __future__ import annotations

import json
import re
import socket

import pytest
from faultproxy_support import (
    assert_error,
    connect,
    error_of,
    listen_port,
    read_until_closed,
    roundtrip,
)

JSON = "application/json"
PLAIN = "text/plain; charset=utf-8"
PROXY_KEYS = ["name", "listen", "upstream", "enabled", "Logger", "toxics"]
# An empty listen is Go's ":0": one dual-stack socket, or IPv4 on a host without IPv6.
WILDCARD_LISTEN = re.compile(r"(\[::\]|0\.0\.0\.0):[1-9][0-9]*\Z")


def ordered(response) -> list[str]:
    return list(json.loads(response.content, object_pairs_hook=lambda p: dict(p)).keys())


# -- transport, routing and middleware ------------------------------------------------------


def test_version_is_json_with_newline(api):
    response = api.get("/version")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=utf-8"
    assert re.fullmatch(rb'\{"version": "\d+\.\d+\.\d+"\}\n', response.content)


def test_request_id_header_on_matched_routes(api):
    first = api.get("/version").headers["X-Toxiproxy-Request-Id"]
    second = api.get("/proxies").headers["X-Toxiproxy-Request-Id"]
    assert re.fullmatch(r"[0-9a-v]{20}", first) and re.fullmatch(r"[0-9a-v]{20}", second)
    assert first != second


def test_unknown_path_is_go_404_without_request_id(api):
    response = api.get("/nope")
    assert response.status_code == 404
    assert response.content == b"404 page not found\n"
    assert response.headers["Content-Type"] == PLAIN
    assert "X-Toxiproxy-Request-Id" not in response.headers


def test_trailing_slash_is_404(api):
    assert api.get("/proxies/").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/proxies"),
        ("HEAD", "/version"),
        ("OPTIONS", "/proxies"),
        ("GET", "/reset"),
        ("DELETE", "/populate"),
        ("PUT", "/proxies/x/toxics/y"),
        ("POST", "/version"),
    ],
)
def test_wrong_method_is_405_with_empty_body(api, method, path):
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.content == b""


@pytest.mark.parametrize(
    ("raw", "location"),
    [("//proxies", "/proxies"), ("/./version", "/version"), ("/proxies/../version", "/version")],
)
def test_unclean_path_redirects_301(api, raw, location):
    with socket.create_connection(
        (api.url.split("//")[1].split(":")[0], int(api.url.rsplit(":", 1)[1])), timeout=5
    ) as sock:
        sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data, _ = read_until_closed(sock)
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 301")
    assert f"Location: {location}" in head


@pytest.mark.parametrize("agent", ["Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/4.0"])
def test_browser_user_agent_gets_403(api, agent):
    response = api.get("/proxies", headers={"User-Agent": agent})
    assert response.status_code == 403
    assert response.content == b"User agent not allowed\n"
    assert response.headers["Content-Type"] == PLAIN
    assert response.headers.get("X-Content-Type-Options") == "nosniff"  # Go's http.Error


@pytest.mark.parametrize("agent", ["python-requests/2.0", "Wget/1.21", "curl/8.0"])
def test_other_user_agents_pass(api, agent):
    assert api.get("/proxies", headers={"User-Agent": agent}).status_code == 200


def test_keep_alive_serves_several_requests_on_one_connection(api):
    host, port = api.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        request = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request * 2 + b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
        data, how = read_until_closed(sock)
    assert how == "eof"
    assert data.count(b"HTTP/1.1 200 OK") == 3


def raw_head(api, header_bytes: int) -> bytes:
    """Send GET /version with one header of header_bytes bytes; return the status line."""
    host, port = api.url.split("//")[1].split(":")
    head = b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
    request = head + b"a" * header_bytes + b"\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # a server that answers early may close before all of it is sent
        data, _ = read_until_closed(sock, timeout=5)
    return data.split(b"\r\n", 1)[0]


def test_headers_up_to_go_limit_are_served_and_larger_ones_are_431(api):
    """Go's http.Server reads up to 1 MB (+4 KB) of request head, then answers 431."""
    assert raw_head(api, 100_000) == b"HTTP/1.1 200 OK"
    assert raw_head(api, 1_000_000) == b"HTTP/1.1 200 OK"
    assert raw_head(api, 1_100_000) == b"HTTP/1.1 431 Request Header Fields Too Large"


# -- proxies --------------------------------------------------------------------------------


def test_create_proxy_201_in_go_field_order(api, unique, echo_server):
    name = unique("create")
    body = {"name": name, "listen": "127.0.0.1:0", "upstream": echo_server.address}
    response = api.post("/proxies", json=body)
    try:
        assert response.status_code == 201
        assert response.headers["Content-Type"] == JSON
        assert ordered(response) == PROXY_KEYS
        proxy = response.json()
        assert proxy["enabled"] is True and proxy["Logger"] == {} and proxy["toxics"] == []
        assert re.fullmatch(r"127\.0\.0\.1:\d+", proxy["listen"]) and listen_port(proxy) > 0
        assert not response.content.endswith(b"\n")
    finally:
        api.delete(f"/proxies/{name}")


def test_create_localhost_resolves_to_ipv4(make_proxy):
    proxy = make_proxy(listen="localhost:0")
    assert proxy["listen"].startswith("127.0.0.1:")


def test_create_disabled_echoes_listen_unresolved(make_proxy, api):
    proxy = make_proxy(listen="localhost:0", enabled=False)
    assert proxy["listen"] == "localhost:0" and proxy["enabled"] is False
    enabled = api.post(f"/proxies/{proxy['name']}", json={"enabled": True}).json()
    assert enabled["listen"].startswith("127.0.0.1:") and enabled["enabled"] is True


def test_create_errors(api, unique, make_proxy, echo_server):
    up = echo_server.address
    assert_error(api.post("/proxies", data=b""), 400, "bad request body: EOF")
    assert_error(api.post("/proxies", json={"upstream": up}), 400, "missing required field: name")
    assert_error(api.post("/proxies", json={}), 400, "missing required field: name")
    assert_error(
        api.post("/proxies", json={"name": unique("x")}), 400, "missing required field: upstream"
    )
    assert_error(
        api.post("/proxies", json={"name": None, "upstream": up}),
        400,
        "missing required field: name",
    )
    bad = api.post("/proxies", data=b'{"name": 5, "upstream": "x"}')
    assert bad.status_code == 400 and error_of(bad).startswith("bad request body: json:")
    assert api.post("/proxies", data=b"{nope").status_code == 400
    existing = make_proxy()
    duplicate = {"name": existing["name"], "upstream": up}
    assert_error(api.post("/proxies", json=duplicate), 409, "proxy already exists")


@pytest.mark.parametrize(("opener", "closer"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_deeply_nested_bodies_are_400_like_go(api, make_proxy, opener, closer):
    """Go's decoder refuses nesting past 10000 levels; the body must not be a server error."""
    proxy = make_proxy()["name"]
    add = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency"})
    assert add.status_code == 200
    nested = opener * 20000 + b"1" + closer * 20000
    message = f"bad request body: invalid character '{opener[:1].decode()}' exceeded max depth"
    for path in ("/proxies", f"/proxies/{proxy}", f"/proxies/{proxy}/toxics/latency_downstream"):
        assert_error(api.post(path, data=nested), 400, message)
    toxic = b'{"type": "latency", "name": "deep", "attributes": ' + nested + b"}"
    assert_error(api.post(f"/proxies/{proxy}/toxics", data=toxic), 400, message)
    populate = api.post("/populate", data=nested)
    assert populate.status_code == 400 and populate.headers["Content-Type"] == JSON
    assert populate.json() == {"error": message, "status": 400, "proxies": None}
    assert api.get(f"/proxies/{proxy}/toxics").json() == [add.json()]


def test_create_on_a_taken_port_is_500_with_go_message(api, unique, make_proxy, echo_server):
    taken = make_proxy()["listen"]
    response = api.post(
        "/proxies", json={"name": unique("x"), "listen": taken, "upstream": echo_server.address}
    )
    assert_error(response, 500, f"listen tcp {taken}: bind: address already in use")
    assert api.get("/proxies").json().get(unique("x")) is None


@pytest.mark.parametrize("listen", [None, ""])
def test_create_without_listen_binds_every_interface(api, unique, echo_server, listen):
    name = unique("any")
    body = {"name": name, "upstream": echo_server.address}
    if listen is not None:
        body["listen"] = listen
    try:
        response = api.post("/proxies", json=body)
        assert response.status_code == 201, response.text
        proxy = response.json()
        assert WILDCARD_LISTEN.match(proxy["listen"]), proxy["listen"]
        with connect(listen_port(proxy)) as sock:
            roundtrip(sock, b"any interface")
    finally:
        api.delete(f"/proxies/{name}")


def test_create_with_bad_listen_is_500(api, unique, echo_server):
    name = unique("x")
    response = api.post(
        "/proxies", json={"name": name, "listen": "local373", "upstream": echo_server.address}
    )
    assert response.status_code == 500
    assert "missing port in address" in error_of(response)
    assert api.get(f"/proxies/{name}").status_code == 404


def test_create_with_a_port_of_thousands_of_digits_is_an_invalid_port(api, unique, echo_server):
    port = "7" * 5000  # longer than Python's int() accepts
    body = {"name": unique("x"), "listen": f"127.0.0.1:{port}", "upstream": echo_server.address}
    assert_error(api.post("/proxies", json=body), 500, f"listen tcp: address {port}: invalid port")


def test_create_decodes_like_go(api, unique, echo_server):
    name = unique("go")
    fields = {
        "NAME": name,
        "Listen": "127.0.0.1:0",
        "upstream": echo_server.address,
        "junk": [1, {"a": 2}],
    }
    raw = json.dumps(fields) + " trailing garbage is ignored"
    response = api.post("/proxies", data=raw.encode())
    try:
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name
    finally:
        api.delete(f"/proxies/{name}")


def test_list_proxies_sorted_with_toxics(api, unique, echo_server, add_toxic):
    names = [unique("b"), unique("a")]
    try:
        for name in names:
            body = {"name": name, "listen": "127.0.0.1:0", "upstream": echo_server.address}
            assert api.post("/proxies", json=body).status_code == 201
        add_toxic(names[0], "latency", attributes={"latency": 5})
        response = api.get("/proxies")
        assert response.status_code == 200 and response.headers["Content-Type"] == JSON
        listed = json.loads(response.content, object_pairs_hook=lambda p: dict(p))
        keys = list(listed)
        assert keys == sorted(keys)
        assert listed[names[0]]["toxics"][0]["type"] == "latency"
        assert list(listed[names[1]]) == PROXY_KEYS
    finally:
        for name in names:
            api.delete(f"/proxies/{name}")


def test_get_proxy(api, make_proxy):
    proxy = make_proxy()
    response = api.get(f"/proxies/{proxy['name']}")
    assert response.status_code == 200 and response.json() == proxy
    assert_error(api.get("/proxies/does-not-exist"), 404, "proxy not found")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_update_keeps_missing_fields(api, make_proxy, method, tcp_server):
    proxy = make_proxy()
    other = tcp_server(lambda conn, stop: None)
    response = api.request(method, f"/proxies/{proxy['name']}", json={"upstream": other.address})
    assert response.status_code == 200 and ordered(response) == PROXY_KEYS
    updated = response.json()
    assert updated["upstream"] == other.address
    assert updated["enabled"] is True and updated["name"] == proxy["name"]


def test_update_ignores_name_and_toxics(api, make_proxy):
    proxy = make_proxy()
    body = {"name": "renamed", "toxics": [{"type": "latency"}]}
    updated = api.patch(f"/proxies/{proxy['name']}", json=body).json()
    assert updated["name"] == proxy["name"] and updated["toxics"] == []


def test_update_errors(api, make_proxy):
    proxy = make_proxy()
    assert_error(api.post(f"/proxies/{proxy['name']}", data=b""), 400, "bad request body: EOF")
    assert_error(api.patch("/proxies/nope", json={"enabled": False}), 404, "proxy not found")
    bad = api.patch(f"/proxies/{proxy['name']}", json={"listen": "local373"})
    assert bad.status_code == 500 and "missing port in address" in error_of(bad)


def test_update_same_address_by_hostname_does_not_restart(api, make_proxy):
    proxy = make_proxy()
    port = listen_port(proxy)
    with connect(port) as sock:
        roundtrip(sock, b"before")
        response = api.patch(f"/proxies/{proxy['name']}", json={"listen": f"localhost:{port}"})
        assert response.status_code == 200
        assert response.json()["listen"] == proxy["listen"]
        roundtrip(sock, b"after")


def test_disable_closes_connections_and_enable_keeps_port(api, make_proxy):
    proxy = make_proxy()
    port = listen_port(proxy)
    with connect(port) as sock:
        roundtrip(sock, b"hello")
        disabled = api.post(f"/proxies/{proxy['name']}", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        _, how = read_until_closed(sock, timeout=3)
        assert how in ("eof", "reset")
    with pytest.raises(ConnectionRefusedError):
        connect(port, timeout=2).close()
    enabled = api.post(f"/proxies/{proxy['name']}", json={"enabled": True}).json()
    assert enabled["listen"] == proxy["listen"]
    with connect(port) as sock:
        roundtrip(sock, b"again")


def test_update_to_empty_listen_binds_every_interface(api, make_proxy):
    proxy = make_proxy()
    response = api.patch(f"/proxies/{proxy['name']}", json={"listen": ""})
    assert response.status_code == 200, response.text
    assert WILDCARD_LISTEN.match(response.json()["listen"])
    with connect(listen_port(response.json())) as sock:
        roundtrip(sock, b"moved")


def test_enable_without_listen_binds_every_interface(api, make_proxy):
    proxy = make_proxy(listen="", enabled=False)
    assert proxy["listen"] == ""
    response = api.post(f"/proxies/{proxy['name']}", json={"enabled": True})
    assert response.status_code == 200, response.text
    assert WILDCARD_LISTEN.match(response.json()["listen"])


def test_update_to_port_zero_picks_a_new_port(api, make_proxy):
    proxy = make_proxy()
    moved = api.patch(f"/proxies/{proxy['name']}", json={"listen": "127.0.0.1:0"}).json()
    assert moved["listen"] != proxy["listen"] and moved["enabled"] is True
    with connect(listen_port(moved)) as sock:
        roundtrip(sock, b"moved")


def test_delete_proxy(api, make_proxy):
    proxy = make_proxy()
    port = listen_port(proxy)
    with connect(port) as sock:
        roundtrip(sock, b"x")
        response = api.delete(f"/proxies/{proxy['name']}")
        assert response.status_code == 204 and response.content == b""
        _, how = read_until_closed(sock, timeout=3)
        assert how in ("eof", "reset")
    assert_error(api.get(f"/proxies/{proxy['name']}"), 404, "proxy not found")
    assert_error(api.delete(f"/proxies/{proxy['name']}"), 404, "proxy not found")
    with pytest.raises(ConnectionRefusedError):
        connect(port, timeout=2).close()


def test_upstream_down_accepts_then_closes(make_proxy, tcp_server):
    dead = tcp_server(lambda conn, stop: None)
    address = dead.address
    dead.close()
    proxy = make_proxy(upstream=address)
    with connect(listen_port(proxy)) as sock:
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"" and how in ("eof", "reset")


# -- reset and populate ------------------------------------------------------------------------


def test_reset_enables_and_removes_toxics_but_keeps_connections(api, make_proxy, add_toxic):
    live = make_proxy()
    down = make_proxy(enabled=False)
    add_toxic(live["name"], "latency", attributes={"latency": 1})
    add_toxic(live["name"], "noop", stream="upstream")
    with connect(listen_port(live)) as sock:
        roundtrip(sock, b"one")
        response = api.post("/reset", data=b"ignored body")
        assert response.status_code == 204 and response.content == b""
        assert api.post("/reset").status_code == 204
        roundtrip(sock, b"two")
    assert api.get(f"/proxies/{live['name']}").json()["toxics"] == []
    assert api.get(f"/proxies/{down['name']}").json()["enabled"] is True


def test_reset_starts_a_disabled_proxy_without_listen(api, make_proxy, add_toxic):
    down = make_proxy(listen="", enabled=False)
    live = make_proxy()
    add_toxic(live["name"], "noop")
    assert api.post("/reset").status_code == 204
    assert WILDCARD_LISTEN.match(api.get(f"/proxies/{down['name']}").json()["listen"])
    assert api.get(f"/proxies/{live['name']}").json()["toxics"] == []


def test_reset_goes_on_past_a_proxy_that_cannot_start(
    api, make_proxy, add_toxic, echo_server, ours
):
    # Go stops at the failing proxy in random map order; the others may always be reset.
    taken = make_proxy(listen=echo_server.address, enabled=False)
    live = make_proxy()
    for proxy in (taken, live):
        add_toxic(proxy["name"], "noop")
    message = f"listen tcp {echo_server.address}: bind: address already in use"
    assert_error(api.post("/reset"), 500, message)
    assert api.get(f"/proxies/{live['name']}").json()["toxics"] == []
    stuck = api.get(f"/proxies/{taken['name']}").json()
    assert stuck["enabled"] is False and len(stuck["toxics"]) == 1


def test_populate_creates_in_order(api, unique, echo_server):
    names = [unique("pop"), unique("pop")]
    body = [{"name": n, "listen": "127.0.0.1:0", "upstream": echo_server.address} for n in names]
    try:
        response = api.post("/populate", json=body)
        assert response.status_code == 201 and response.headers["Content-Type"] == JSON
        proxies = response.json()["proxies"]
        assert [p["name"] for p in proxies] == names
        assert all(p["enabled"] for p in proxies)
        assert list(proxies[0]) == PROXY_KEYS
    finally:
        for name in names:
            api.delete(f"/proxies/{name}")


def test_populate_without_listen_binds_every_interface(api, unique, echo_server):
    names = [unique("pop"), unique("pop")]
    body = [
        {"name": names[0], "upstream": echo_server.address},
        {"name": names[1], "listen": "", "upstream": echo_server.address},
    ]
    try:
        response = api.post("/populate", json=body)
        assert response.status_code == 201, response.text
        for proxy in response.json()["proxies"]:
            assert WILDCARD_LISTEN.match(proxy["listen"]), proxy["listen"]
            with connect(listen_port(proxy)) as sock:
                roundtrip(sock, b"populated")
    finally:
        for name in names:
            api.delete(f"/proxies/{name}")


def test_populate_keeps_unchanged_and_replaces_changed(api, make_proxy, add_toxic, tcp_server):
    same = make_proxy()
    changed = make_proxy()
    for proxy in (same, changed):
        add_toxic(proxy["name"], "noop")
    other = tcp_server(lambda conn, stop: None)
    body = [
        {
            "name": same["name"],
            "listen": same["listen"],
            "upstream": same["upstream"],
            "enabled": False,
        },
        {"name": changed["name"], "listen": "127.0.0.1:0", "upstream": other.address},
    ]
    response = api.post("/populate", json=body)
    assert response.status_code == 201
    kept, replaced = response.json()["proxies"]
    assert kept["enabled"] is True and len(kept["toxics"]) == 1
    assert replaced["upstream"] == other.address and replaced["toxics"] == []


def test_populate_validates_everything_first(api, unique, echo_server):
    first = unique("ok")
    body = [
        {"name": first, "upstream": echo_server.address, "listen": "127.0.0.1:0"},
        {"upstream": echo_server.address},
    ]
    response = api.post("/populate", json=body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == JSON and not response.content.endswith(b"\n")
    assert response.json() == {
        "error": "missing required field: name at proxy 2",
        "status": 400,
        "proxies": None,
    }
    assert api.get(f"/proxies/{first}").status_code == 404
    missing_up = api.post("/populate", json=[{"name": unique("u")}])
    assert error_of(missing_up) == "missing required field: upstream at proxy 1"


def test_populate_stops_at_first_start_failure(api, unique, echo_server):
    one, two, three = unique("one"), unique("two"), unique("three")
    body = [
        {"name": one, "listen": "127.0.0.1:0", "upstream": echo_server.address},
        {"name": two, "listen": "local373", "upstream": echo_server.address},
        {"name": three, "listen": "127.0.0.1:0", "upstream": echo_server.address},
    ]
    try:
        response = api.post("/populate", json=body)
        assert response.status_code == 500 and response.headers["Content-Type"] == JSON
        payload = response.json()
        assert "missing port in address" in payload["error"] and payload["status"] == 500
        assert [p["name"] for p in payload["proxies"]] == [one]
        assert api.get(f"/proxies/{one}").status_code == 200
        assert api.get(f"/proxies/{two}").status_code == 404
        assert api.get(f"/proxies/{three}").status_code == 404
    finally:
        api.delete(f"/proxies/{one}")


def test_populate_never_deletes_proxies_missing_from_the_input(
    api, make_proxy, add_toxic, unique, echo_server
):
    absent = make_proxy()
    add_toxic(absent["name"], "noop")
    name = unique("pop")
    body = [{"name": name, "listen": "127.0.0.1:0", "upstream": echo_server.address}]
    try:
        assert api.post("/populate", json=body).status_code == 201
        kept = api.get(f"/proxies/{absent['name']}")
        assert kept.status_code == 200
        assert kept.json()["enabled"] is True and len(kept.json()["toxics"]) == 1
        with connect(listen_port(absent)) as sock:
            roundtrip(sock, b"still here")
    finally:
        api.delete(f"/proxies/{name}")


def test_populate_keeps_the_old_proxy_disabled_when_its_replacement_cannot_start(
    api, make_proxy, add_toxic, echo_server
):
    """Go stops the old proxy before starting the new one, which fails: the old one stays."""
    old = make_proxy()
    add_toxic(old["name"], "noop")
    body = [{"name": old["name"], "listen": echo_server.address, "upstream": old["upstream"]}]
    response = api.post("/populate", json=body)
    assert response.status_code == 500 and response.headers["Content-Type"] == JSON
    assert response.json() == {
        "error": f"listen tcp {echo_server.address}: bind: address already in use",
        "status": 500,
        "proxies": None,
    }
    stuck = api.get(f"/proxies/{old['name']}").json()
    assert stuck["enabled"] is False
    assert stuck["listen"] == old["listen"] and stuck["upstream"] == old["upstream"]
    assert [toxic["type"] for toxic in stuck["toxics"]] == ["noop"]
    enabled = api.post(f"/proxies/{old['name']}", json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json()["listen"] == old["listen"]
    with connect(listen_port(old)) as sock:
        roundtrip(sock, b"the old proxy")


def test_populate_empty_and_bad_bodies(api):
    response = api.post("/populate", json=[])
    assert response.status_code == 201 and response.json() == {"proxies": None}
    bad = api.post("/populate", data=b"")
    assert bad.status_code == 400 and bad.json()["error"] == "bad request body: EOF"
    not_array = api.post("/populate", json={"name": "x"})
    assert not_array.status_code == 400
    assert not_array.json()["error"].startswith("bad request body: json: cannot unmarshal object")
