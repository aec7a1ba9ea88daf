"""Fixtures for the conformance suite: the server under test, an API caller, TCP servers."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import pytest
from faultproxy_support import Api, TcpServer, echo

from chaos.faultproxy.locate import Located, find_server


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Located]:
    """The server under test: TOXIPROXY_URL, else toxiproxy-server on PATH, else ours."""
    log_path = tmp_path_factory.mktemp("faultproxy") / "server.log"
    server = find_server(log_path=str(log_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(toxiproxy: Located) -> Iterator[Api]:
    caller = Api(toxiproxy.url)
    yield caller
    caller.close()


@pytest.fixture(scope="session")
def is_ours(api: Api) -> bool:
    """Whether the server is chaos.faultproxy (it exposes faultproxy_* gauges)."""
    response = api.get("/metrics")
    return response.status_code == 200 and "faultproxy_connections_current" in response.text


@pytest.fixture
def ours(is_ours: bool) -> None:
    """Skip a test of behaviour where we deliberately differ from the Go server."""
    if not is_ours:
        pytest.skip("checks a documented difference of chaos.faultproxy")


@pytest.fixture(scope="session")
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.close()


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    """Start TCP servers with a given handler; all are closed after the test."""
    started: list[TcpServer] = []

    def start(handler) -> TcpServer:
        server = TcpServer(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


_serial = itertools.count()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Return a name maker whose names cannot clash with other tests or runs."""
    token = uuid.uuid4().hex[:6]
    return lambda stem: f"{stem}_{token}_{next(_serial)}"


@pytest.fixture
def make_proxy(api: Api, unique, echo_server: TcpServer) -> Iterator[Callable[..., dict]]:
    """Create proxies (to the echo server unless told) and delete them after the test."""
    created: list[str] = []

    def make(upstream: str | None = None, **fields) -> dict:
        body = {
            "name": fields.pop("name", None) or unique("p"),
            "listen": fields.pop("listen", "127.0.0.1:0"),
            "upstream": upstream or echo_server.address,
            **fields,
        }
        response = api.post("/proxies", json=body)
        assert response.status_code == 201, response.text
        created.append(body["name"])
        return response.json()

    yield make
    for name in created:
        api.delete(f"/proxies/{name}")


@pytest.fixture
def add_toxic(api: Api) -> Callable[..., dict]:
    """Add a toxic to a proxy and return it (asserting the 200)."""

    def add(proxy: str, type_: str, stream: str = "downstream", **kwargs) -> dict:
        body = {"type": type_, "stream": stream, "attributes": kwargs.pop("attributes", {})}
        body.update(kwargs)
        response = api.post(f"/proxies/{proxy}/toxics", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    return add
