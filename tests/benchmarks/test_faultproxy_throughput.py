"""Throughput through the fault proxy with no toxics, against direct, in the same run.

Run with ``pytest tests/benchmarks/test_faultproxy_throughput.py --benchmark-enable -s``.
Targets (docs/faultproxy.md): proxied / direct >= 0.6 for PostgreSQL (psycopg2 SELECT 1
loop) and RabbitMQ (pika publish-with-confirm + get loop), and a 100 ms latency toxic
within 5 ms (median). The ratios are printed and written to .benchmarks/faultproxy.json;
only alarm thresholds are asserted for them, because on a shared 2-core VM even a C relay
(socat, measured alongside when installed) misses 0.6 for one-query-at-a-time loops.
Direct and proxied rounds alternate so that machine noise hits both sides alike.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.faultproxy.client import Client
from chaos.faultproxy.locate import Located, find_server, free_port

pytestmark = pytest.mark.timeout(300)

QUICK = bool(os.environ.get("RECO_BENCH_QUICK"))
ROUNDS = 3
ROUND_SECONDS = 0.5 if QUICK else 1.5
TARGET_RATIO = 0.6
ALARM_RATIO = 0.2
LATENCY_MS = 100
LATENCY_TOLERANCE = 0.005
IO_TIMEOUT = 10.0
OUTPUT = Path(".benchmarks") / "faultproxy.json"
RESULTS: dict[str, object] = {}


@pytest.fixture(scope="session", autouse=True)
def enabled(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip unless benchmarks are enabled; write every result to JSON at the end."""
    config = request.config
    if config.getoption("benchmark_disable", False) and not config.getoption(
        "benchmark_enable", False
    ):
        pytest.skip("benchmarks run with --benchmark-enable")
    yield
    if RESULTS:
        OUTPUT.parent.mkdir(exist_ok=True)
        machine = {
            "date": datetime.date.today().isoformat(),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
        OUTPUT.write_text(json.dumps({"machine": machine, **RESULTS}, indent=2) + "\n")


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Located]:
    """TOXIPROXY_URL, a toxiproxy-server on PATH, or ours (see locate.find_server)."""
    server = find_server(log_path=str(tmp_path_factory.mktemp("faultproxy") / "server.log"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_client(fault_server: Located) -> Iterator[Client]:
    with Client(fault_server.url) as client:
        yield client


@contextlib.contextmanager
def proxy_to(client: Client, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Create a proxy to host:port for the block and yield its name and listen port."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    created = client.create_proxy(name, f"{host}:{port}")
    try:
        yield name, int(created["listen"].rsplit(":", 1)[1])
    finally:
        client.delete_proxy(name)


def rate(loop_once: Callable[[], int], seconds: float = ROUND_SECONDS) -> float:
    """Run loop_once (returning units done) repeatedly for seconds; return units per second."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += loop_once()
    return done / (time.perf_counter() - start)


def compare(make_direct: Callable[[], Callable[[], int]], make_proxied) -> tuple[float, float]:
    """Alternate direct and proxied rounds; return (median direct, median proxied) rates."""
    direct, proxied = [], []
    for _ in range(ROUNDS):
        direct.append(rate(make_direct()))
        proxied.append(rate(make_proxied()))
    return statistics.median(direct), statistics.median(proxied)


def report(
    capsys: pytest.CaptureFixture, key: str, unit: str, direct: float, proxied: float, **extra
) -> float:
    """Print and record one comparison; return proxied / direct."""
    ratio = proxied / direct
    RESULTS[key] = {"unit": unit, "direct": direct, "proxied": proxied, "ratio": ratio, **extra}
    note = "" if key.startswith("echo") or ratio >= TARGET_RATIO else f" (target {TARGET_RATIO})"
    details = "".join(f", {k} {v:.2f}" for k, v in extra.items())
    with capsys.disabled():
        print(
            f"\n[faultproxy bench] {key}: direct {direct:,.0f} {unit}, proxied {proxied:,.0f}"
            f" {unit}, proxied/direct = {ratio:.2f}{note}{details}"
        )
    return ratio


# -- TCP echo (no external services) ---------------------------------------------------------


class EchoServer:
    """A threaded echo server on 127.0.0.1 with blocking sockets (the cheapest echo)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        # 64 KB reads: bigger recv() sizes cost an allocation per call that skews timings.
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.stopping.set()
        self.acceptor.join(5)
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(5)
        for conn in self.conns:
            conn.close()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@contextlib.contextmanager
def echo_connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield sock
    finally:
        sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(min(size - len(data), 65536))
        if not piece:
            raise EOFError("echo closed early")
        data += piece
    return bytes(data)


def echo_round_trip(sock: socket.socket, payload: bytes) -> int:
    sock.sendall(payload)
    recv_exactly(sock, len(payload))
    return 1


def echo_bulk(sock: socket.socket, block: bytes) -> int:
    """Send 4 MB while reading it back; return bytes moved."""
    total = len(block) * 64
    reader = threading.Thread(target=recv_exactly, args=(sock, total))
    reader.start()
    for _ in range(64):
        sock.sendall(block)
    reader.join(IO_TIMEOUT)
    return total


def test_echo_throughput(fault_client, echo_server, capsys):
    with (
        proxy_to(fault_client, "127.0.0.1", echo_server.port) as (_, port),
        contextlib.ExitStack() as stack,
    ):
        direct_sock = stack.enter_context(echo_connection(echo_server.port))
        proxied_sock = stack.enter_context(echo_connection(port))
        small = b"x" * 64
        direct, proxied = compare(
            lambda: lambda: echo_round_trip(direct_sock, small),
            lambda: lambda: echo_round_trip(proxied_sock, small),
        )
        report(capsys, "echo_64B_round_trips", "trips/s", direct, proxied)
        block = os.urandom(64 * 1024)
        direct, proxied = compare(
            lambda: lambda: echo_bulk(direct_sock, block),
            lambda: lambda: echo_bulk(proxied_sock, block),
        )
        report(capsys, "echo_bulk", "B/s", direct, proxied)
    assert proxied > 0


def test_latency_toxic_accuracy(fault_client, echo_server, capsys):
    with contextlib.ExitStack() as stack:
        name, port = stack.enter_context(proxy_to(fault_client, "127.0.0.1", echo_server.port))
        sock = stack.enter_context(echo_connection(port))

        def sample(count: int) -> list[float]:
            times = []
            for _ in range(count):
                start = time.perf_counter()
                echo_round_trip(sock, b"ping")
                times.append(time.perf_counter() - start)
            return times

        baseline = statistics.median(sample(30))
        fault_client.add_toxic(name, "latency", latency=LATENCY_MS)
        added = [t - baseline for t in sample(30)]
    error = statistics.median(added) - LATENCY_MS / 1000
    RESULTS["latency_toxic"] = {
        "latency_ms": LATENCY_MS,
        "median_added_ms": statistics.median(added) * 1000,
        "median_error_ms": error * 1000,
        "baseline_round_trip_ms": baseline * 1000,
    }
    with capsys.disabled():
        print(
            f"\n[faultproxy bench] latency toxic {LATENCY_MS} ms: median added"
            f" {statistics.median(added) * 1000:.2f} ms, median error {error * 1000:+.2f} ms"
            f" (baseline round trip {baseline * 1000:.3f} ms)"
        )
    assert min(added) >= LATENCY_MS / 1000 - 0.002
    assert abs(error) <= LATENCY_TOLERANCE


# -- PostgreSQL and RabbitMQ (project fixtures) ------------------------------------------------


@contextlib.contextmanager
def socat_relay(host: str, port: int) -> Iterator[int | None]:
    """Run socat as a reference TCP relay when it is installed; yield its port or None."""
    if shutil.which("socat") is None:
        yield None
        return
    listen = free_port()
    proc = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork",
            f"TCP:{host}:{port},nodelay",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen), 1):
                break
            time.sleep(0.05)
        yield listen
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_postgres_select1_throughput(fault_client, pg_instance, capsys):
    psycopg2 = pytest.importorskip("psycopg2")

    def connect(port: int):
        conn = psycopg2.connect(
            host=pg_instance.host,
            port=port,
            user="postgres",
            dbname="postgres",
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def select_loop(conn) -> Callable[[], Callable[[], int]]:
        cur = conn.cursor()

        def once() -> int:
            cur.execute("SELECT 1")
            cur.fetchone()
            return 1

        return lambda: once

    extra = {}
    with proxy_to(fault_client, pg_instance.host, pg_instance.port) as (_, port):
        direct_conn, proxied_conn = connect(pg_instance.port), connect(port)
        try:
            direct, proxied = compare(select_loop(direct_conn), select_loop(proxied_conn))
            with socat_relay(pg_instance.host, pg_instance.port) as relay_port:
                if relay_port is not None:
                    relay_conn = connect(relay_port)
                    try:
                        base, relayed = compare(select_loop(direct_conn), select_loop(relay_conn))
                    finally:
                        relay_conn.close()
                    extra["socat_ratio"] = relayed / base
        finally:
            direct_conn.close()
            proxied_conn.close()
    ratio = report(capsys, "postgres_select1", "queries/s", direct, proxied, **extra)
    assert ratio >= ALARM_RATIO


def test_rabbitmq_publish_consume_throughput(fault_client, rabbit_instance, capsys):
    pika = pytest.importorskip("pika")

    def connect(port: int):
        params = pika.URLParameters(rabbit_instance.url)
        params.host, params.port = rabbit_instance.host, port
        params.socket_timeout = 5
        params.blocked_connection_timeout = 5
        params.connection_attempts = 1
        return pika.BlockingConnection(params)

    def publish_get_loop(conn) -> Callable[[], Callable[[], int]]:
        channel = conn.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        body = b"m" * 256

        def once() -> int:
            channel.basic_publish("", queue, body)
            for _ in range(100):
                method, _props, _body = channel.basic_get(queue, auto_ack=True)
                if method is not None:
                    return 1
            raise AssertionError("published message never arrived")

        return lambda: once

    with proxy_to(fault_client, rabbit_instance.host, rabbit_instance.port) as (_, port):
        direct_conn, proxied_conn = connect(rabbit_instance.port), connect(port)
        try:
            direct, proxied = compare(publish_get_loop(direct_conn), publish_get_loop(proxied_conn))
        finally:
            direct_conn.close()
            proxied_conn.close()
    ratio = report(capsys, "rabbitmq_publish_get", "messages/s", direct, proxied)
    assert ratio >= ALARM_RATIO
