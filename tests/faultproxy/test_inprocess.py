"""In-process checks of chaos.faultproxy internals that the HTTP suite cannot reach."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest

from chaos.faultproxy import httpio
from chaos.faultproxy import link as link_module
from chaos.faultproxy.connection import Connection
from chaos.faultproxy.link import CHUNK_SIZE, Link
from chaos.faultproxy.metrics import Metrics
from chaos.faultproxy.proxy import Proxy
from chaos.faultproxy.toxics import Toxic

pytestmark = pytest.mark.timeout(30)


class RecordingTransport:
    """A destination transport that keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def make_link(*toxics: Toxic) -> tuple[Link, RecordingTransport]:
    """A downstream link through toxics, writing to a recording transport."""
    transport = RecordingTransport()
    source = SimpleNamespace(transport=None, lost=False)
    dest = SimpleNamespace(transport=transport, lost=False)
    conn = SimpleNamespace(close_endpoint=lambda endpoint: transport.writes.append(b"<closed>"))
    return Link(conn, "downstream", source, dest, list(toxics)), transport


async def until_idle(link: Link) -> None:
    for _ in range(10_000):
        if not link.busy:
            return
        await asyncio.sleep(0)
    raise AssertionError("the link worker did not finish")


async def until(probe, timeout: float = 5.0) -> None:
    """Wait, bounded, until probe() is true."""
    async with asyncio.timeout(timeout):
        while not probe():
            await asyncio.sleep(0.001)


def test_link_worker_yields_between_chunks(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_SECONDS", 0.0)  # a turn ends after every chunk

    async def scenario() -> tuple[int, int]:
        link, transport = make_link(Toxic("noop_downstream", "noop", "downstream", 1.0, {}))
        link.feed(b"x" * (8 * CHUNK_SIZE))
        await asyncio.sleep(0)  # the worker's first step runs before this task resumes
        seen_midway = len(transport.writes)
        await until_idle(link)
        return seen_midway, len(transport.writes)

    seen_midway, total = asyncio.run(scenario())
    assert total == 8
    assert seen_midway < total


def test_slicer_without_delay_yields_and_an_update_flushes_the_rest(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_SECONDS", 0.0)
    attributes = {"average_size": 1, "size_variation": 0, "delay": 0}

    async def scenario() -> list[bytes]:
        slicer = Toxic("slicer_downstream", "slicer", "downstream", 1.0, attributes)
        link, transport = make_link(slicer)
        link.feed(b"abcdefgh")
        await asyncio.sleep(0)  # one piece goes out, then the slicer hands the loop back
        assert transport.writes == [b"a"]
        link.update_toxic(slicer)  # as Go: an interrupted slicer sends the rest as one piece
        await until_idle(link)
        return transport.writes

    assert asyncio.run(scenario()) == [b"a", b"bcdefgh"]


class SlowTransport(RecordingTransport):
    """A destination whose every write costs the event loop some time, as real work does."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost

    def write(self, data: bytes) -> None:
        time.sleep(self.cost)
        super().write(data)


def test_bandwidth_keeps_its_rate_when_forwarding_takes_time():
    """The time spent between sleeps must not come out of the rate (it did: 4 ms a chunk)."""
    chunks, rate = 50, 8192  # KB/s: a 32 KB chunk is due every 4 ms, 0.2 s in all

    async def scenario() -> float:
        bandwidth = Toxic("bandwidth_downstream", "bandwidth", "downstream", 1.0, {"rate": rate})
        link, _ = make_link(bandwidth)
        transport = SlowTransport(cost=0.004)
        link.dest.transport = transport
        start = time.monotonic()
        link.feed(b"x" * (chunks * CHUNK_SIZE))
        await until(lambda: len(transport.writes) == chunks)
        return time.monotonic() - start

    expected = chunks * CHUNK_SIZE / (rate * 1000)
    elapsed = asyncio.run(scenario())
    # Summing only the sleeps took at least 0.4 s here, half the rate.
    assert expected - 0.005 <= elapsed < expected * 1.5


def test_bandwidth_delays_a_lone_small_chunk_by_its_own_cost():
    """Chunks that arrive after the previous one left are each delayed, as in Go."""

    async def scenario() -> list[float]:
        bandwidth = Toxic("bandwidth_downstream", "bandwidth", "downstream", 1.0, {"rate": 100})
        link, transport = make_link(bandwidth)
        delays = []
        for _ in range(3):
            start = time.monotonic()
            link.feed(b"y" * 2000)  # 20 ms at 100 KB/s
            await until(lambda: not link.busy)
            delays.append(time.monotonic() - start)
            await asyncio.sleep(0.05)
        return delays

    assert all(delay >= 0.02 - 0.002 for delay in asyncio.run(scenario()))


class FakeClientTransport:
    """An accepted client socket: abort() reports the loss on the next loop pass."""

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.closing = False

    def get_extra_info(self, name: str):
        return None

    def pause_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    close = abort


def test_a_connection_aborted_before_its_dial_starts_is_forgotten():
    """A proxy disabled right as a client is accepted must not keep that connection forever."""

    async def scenario() -> tuple[int, int]:
        metrics = Metrics()
        proxy = Proxy(metrics, "p", "127.0.0.1:0", "127.0.0.1:9")
        conn = Connection(proxy, proxy.generation)
        conn.client.connection_made(FakeClientTransport(conn.client))
        conn.abort()  # the dial task is cancelled before it ever ran
        for _ in range(20):
            await asyncio.sleep(0)
        return len(proxy.connections), len(metrics.open)

    assert asyncio.run(scenario()) == (0, 0)


def test_a_client_accepted_by_a_listener_since_closed_is_closed_not_proxied():
    """Accepted just before a disable, its connection_made comes after: it must not dial."""

    async def scenario(upstream: str) -> tuple[bool, int, object]:
        proxy = Proxy(Metrics(), "p", "127.0.0.1:0", upstream)
        await proxy.start()
        conn = Connection(proxy, proxy.generation)  # as the listener's factory makes it
        proxy.stop()  # the proxy is disabled before the socket is handed over
        transport = FakeClientTransport(conn.client)
        conn.client.connection_made(transport)
        for _ in range(20):
            await asyncio.sleep(0)
        return transport.closing, len(proxy.connections), conn.dial

    with socket.socket() as listener:  # an upstream that would take the dial
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        upstream = f"127.0.0.1:{listener.getsockname()[1]}"
        assert asyncio.run(scenario(upstream)) == (True, 0, None)


def test_timeout_closing_behind_a_chunk_lets_that_chunk_out_first():
    """A chunk past a timeout (rolled inactive) leaves before the end the timeout then sends."""

    async def scenario() -> list[bytes]:
        timeout = Toxic("timeout_downstream", "timeout", "downstream", 0.0, {"timeout": 50})
        latency = Toxic(
            "latency_downstream", "latency", "downstream", 1.0, {"latency": 300, "jitter": 0}
        )
        link, transport = make_link(timeout, latency)
        stage = link.stages[0]
        link.feed(b"early")
        await until(lambda: stage.passing)  # the chunk waits in the latency stage
        timeout.toxicity = 1.0
        link.update_toxic(timeout)  # re-rolled active: its timer fires while the chunk waits
        await until(lambda: stage.shut)
        link.feed(b"dropped")
        assert transport.writes == []
        await until(lambda: b"<closed>" in transport.writes)
        await until_idle(link)
        return transport.writes

    assert asyncio.run(scenario()) == [b"early", b"<closed>"]


def test_api_drops_a_client_that_stops_reading(monkeypatch):
    monkeypatch.setattr(httpio, "WRITE_TIMEOUT", 0.2)
    body = b"x" * (32 << 20)  # far more than the socket buffers of a client that never reads

    async def handler(request: httpio.Request) -> httpio.Response:
        return httpio.Response(200, body)

    async def scenario() -> None:
        finished = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await httpio.serve_client(reader, writer, handler)
            finally:
                finished.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(client, server.sockets[0].getsockname())
            await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            async with asyncio.timeout(5):
                await finished.wait()
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
