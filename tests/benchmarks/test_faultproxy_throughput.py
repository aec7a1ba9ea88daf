"""Throughput through the fault proxy with no toxics, against direct, in the same run.

Run with ``flock /tmp/bench.lock pytest tests/benchmarks/test_faultproxy_throughput.py
--benchmark-enable -s -p no:cacheprovider`` (the lock keeps benchmarks on a shared machine from
overlapping). Every number goes to stdout and .benchmarks/faultproxy.json.

The target measurements (docs/faultproxy.md: proxied / direct >= 0.6) are the ones the issue
names, a psycopg2 loop and a pika publish/consume loop:

- ``postgres_select1``: one connection running a psycopg2 ``SELECT 1`` loop, one query at a
  time, so every query pays the extra hop's wake-ups in full;
- ``rabbitmq_pipelined``: one connection publishing persistent messages with publisher confirms
  and a window of 64 in flight while a consumer channel (prefetch 64) acks each delivery, as the
  outbox relay and the feature consumer do.

Also reported, not targets: ``postgres_concurrent`` (4 client processes, each with its own
connection in a ``SELECT 1`` loop: nothing but round trips on both cores, so the relay's CPU
comes out of the clients' share; socat lands in the same place), ``pgbench -S -c 4 -j 2`` (the
standard tool; a C client, so the relay's share of the two cores is at its largest),
``rabbitmq_publish_get`` (one message at a time), raw TCP echo, and the latency toxic's
accuracy. When socat is installed every PostgreSQL and RabbitMQ variant is also run through
socat (a C relay), the reference for what any userspace relay costs on the machine.

Rounds interleave direct, proxied and socat (the order rotates every round) so that machine
noise hits all alike; each round's proxied rate is divided by the same round's direct rate and
the minimum, median and maximum of those ratios are reported. Only alarm thresholds are
asserted for the ratios (a collapse, not noise, fails); the latency toxic's 5 ms bound is a
correctness check and stays asserted.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import glob
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from chaos.faultproxy.client import Client
from chaos.faultproxy.locate import Located, find_server, free_port

pytestmark = pytest.mark.timeout(300)

QUICK = bool(os.environ.get("RECO_BENCH_QUICK"))
ROUNDS = int(os.environ.get("RECO_FAULTPROXY_ROUNDS", "3"))
ROUND_SECONDS = 0.5 if QUICK else 1.5
PGBENCH_SECONDS = 1 if QUICK else 2  # pgbench -T takes whole seconds
CLIENTS = 4  # the service runs 4 gunicorn workers
RABBIT_WINDOW = 64
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
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        OUTPUT.write_text(json.dumps({"machine": machine, **RESULTS}, indent=2) + "\n")


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Located]:
    """TOXIPROXY_URL, a toxiproxy-server on PATH, or ours (see locate.find_server)."""
    log_path = tmp_path_factory.mktemp("faultproxy") / "server.log"
    server = find_server(log_path=str(log_path))
    RESULTS["server"] = {"kind": server.kind, "event_loop": _event_loop(log_path)}
    yield server
    server.stop()


def _event_loop(log_path: Path) -> str | None:
    """The event loop our server logged at start (uvloop or asyncio), if it is ours."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in log_path.read_text().splitlines():
                if '"Event loop"' in line:
                    return json.loads(line).get("loop")
        time.sleep(0.05)
    return None


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


def interleave(variants: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> dict:
    """Run every variant once per round, rotating the order; return each one's rates."""
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(variants[name]())
    return rates


def compare(make_direct: Callable[[], Callable[[], int]], make_proxied) -> tuple[float, float]:
    """Alternate direct and proxied rounds; return (median direct, median proxied) rates."""
    rates = interleave(
        {"direct": lambda: rate(make_direct()), "proxied": lambda: rate(make_proxied())}
    )
    return statistics.median(rates["direct"]), statistics.median(rates["proxied"])


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def report_rounds(
    capsys: pytest.CaptureFixture, key: str, unit: str, rates: dict[str, list[float]], **info
) -> dict[str, float]:
    """Print and record rates per round and round-by-round ratios to direct; return the
    proxied ratio's min/median/max."""
    direct = rates["direct"]
    ratios = {
        name: spread([value / base for value, base in zip(values, direct, strict=True)])
        for name, values in rates.items()
        if name != "direct"
    }
    RESULTS[key] = {
        "unit": unit,
        "rounds": rates,
        "median": {name: statistics.median(values) for name, values in rates.items()},
        "ratio": ratios,
        "target_ratio": TARGET_RATIO,
        **info,
    }
    lines = [f"\n[faultproxy bench] {key} ({unit}, {len(direct)} rounds)"]
    for name, values in rates.items():
        line = f"  {name:8} " + " ".join(f"{v:>12,.0f}" for v in values)
        if name in ratios:
            r = ratios[name]
            line += f"   ÷ direct min {r['min']:.2f} median {r['median']:.2f} max {r['max']:.2f}"
        lines.append(line)
    with capsys.disabled():
        print("\n".join(lines))
    return ratios["proxied"]


def report(
    capsys: pytest.CaptureFixture, key: str, unit: str, direct: float, proxied: float, **extra
) -> float:
    """Print and record one comparison of medians; return proxied / direct."""
    ratio = proxied / direct
    RESULTS[key] = {"unit": unit, "direct": direct, "proxied": proxied, "ratio": ratio, **extra}
    details = "".join(f", {k} {v:.2f}" for k, v in extra.items())
    with capsys.disabled():
        print(
            f"\n[faultproxy bench] {key}: direct {direct:,.0f} {unit}, proxied {proxied:,.0f}"
            f" {unit}, proxied/direct = {ratio:.2f}{details}"
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
            f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,nodelay",
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


@contextlib.contextmanager
def ports_to(client: Client, host: str, port: int) -> Iterator[dict[str, int]]:
    """Ports reaching host:port: direct, through the fault proxy, and through socat if any."""
    with proxy_to(client, host, port) as (_, proxied), socat_relay(host, port) as relayed:
        ports = {"direct": port, "proxied": proxied}
        if relayed is not None:
            ports["socat"] = relayed
        yield ports


@pytest.fixture(scope="module")
def pg_ports(fault_client, pg_instance) -> Iterator[dict[str, int]]:
    """Ports reaching PostgreSQL."""
    with ports_to(fault_client, pg_instance.host, pg_instance.port) as ports:
        yield ports


@pytest.fixture(scope="module")
def rabbit_ports(fault_client, rabbit_instance) -> Iterator[dict[str, int]]:
    """Ports reaching RabbitMQ."""
    with ports_to(fault_client, rabbit_instance.host, rabbit_instance.port) as ports:
        yield ports


def pg_params(pg_instance, port: int, dbname: str = "postgres") -> dict[str, object]:
    """psycopg2.connect() keywords for the instance's user on port."""
    parts = urlsplit(pg_instance.url)
    params: dict[str, object] = {
        "host": pg_instance.host,
        "port": port,
        "user": unquote(parts.username or "postgres"),
        "dbname": dbname,
        "connect_timeout": 5,
    }
    if parts.password:
        params["password"] = unquote(parts.password)
    return params


def test_postgres_select1_throughput(pg_instance, pg_ports, capsys):
    """TARGET: one connection, one query at a time, every query paying the extra hop."""
    psycopg2 = pytest.importorskip("psycopg2")
    conns = {}
    try:
        for name, port in pg_ports.items():
            conns[name] = psycopg2.connect(**pg_params(pg_instance, port))
            conns[name].autocommit = True

        def select_loop(conn) -> Callable[[], float]:
            cur = conn.cursor()

            def once() -> int:
                cur.execute("SELECT 1")
                cur.fetchone()
                return 1

            return lambda: rate(once)

        rates = interleave({name: select_loop(conn) for name, conn in conns.items()})
    finally:
        for conn in conns.values():
            conn.close()
    ratio = report_rounds(capsys, "postgres_select1", "queries/s", rates, clients=1, target=True)
    assert ratio["median"] >= ALARM_RATIO


# The loop each client process runs: connect to every variant, then on each stdin line
# "<variant> <start wall time> <seconds>" wait for the start and count SELECT 1 round trips.
PG_CLIENT = """
import json, sys, time
import psycopg2
cursors = {}
for name, params in json.loads(sys.argv[1]).items():
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    cursors[name] = conn.cursor()
print("ready", flush=True)
for line in sys.stdin:
    name, start, seconds = line.split()
    cur, start = cursors[name], float(start)
    end = start + float(seconds)
    while time.time() < start:
        time.sleep(0.0005)
    done = 0
    while time.time() < end:
        cur.execute("SELECT 1")
        cur.fetchone()
        done += 1
    print(done, flush=True)
"""


class PgClients:
    """CLIENTS processes, each holding one connection per variant, driven over stdin."""

    def __init__(self, params: dict[str, dict[str, object]]):
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", PG_CLIENT, json.dumps(params)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(CLIENTS)
        ]
        for proc in self.procs:
            if proc.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError("a benchmark client failed to connect")

    def rate(self, variant: str, seconds: float = ROUND_SECONDS) -> float:
        start = time.time() + 0.05
        for proc in self.procs:
            proc.stdin.write(f"{variant} {start} {seconds}\n")
            proc.stdin.flush()
        return sum(int(proc.stdout.readline()) for proc in self.procs) / seconds

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(IO_TIMEOUT)
            proc.stdout.close()


def test_postgres_concurrent_throughput(pg_instance, pg_ports, capsys):
    """4 processes in SELECT 1 loops: both cores saturated with round trips (reported)."""
    pytest.importorskip("psycopg2")
    params = {name: pg_params(pg_instance, port) for name, port in pg_ports.items()}
    clients = PgClients(params)
    try:
        rates = interleave({name: functools.partial(clients.rate, name) for name in params})
    finally:
        clients.close()
    ratio = report_rounds(capsys, "postgres_concurrent", "queries/s", rates, clients=CLIENTS)
    assert ratio["median"] >= ALARM_RATIO


def pgbench_binary() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True):
        return candidate
    return shutil.which("pgbench")


def test_pgbench_select_only(pg_instance, pg_ports, capsys):
    """pgbench -S -c 4 -j 2: the standard tool, reported alongside (not the target)."""
    psycopg2 = pytest.importorskip("psycopg2")
    pgbench = pgbench_binary()
    if pgbench is None:
        pytest.skip("pgbench is not installed (postgresql-contrib)")
    dbname = "faultproxy_pgbench"
    admin = psycopg2.connect(**pg_params(pg_instance, pg_instance.port))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        admin.close()
    base = pg_params(pg_instance, pg_instance.port, dbname)
    env = {**os.environ, "PGUSER": str(base["user"]), "PGCONNECT_TIMEOUT": "5"}
    if "password" in base:
        env["PGPASSWORD"] = str(base["password"])

    def run(port: int, *args: str) -> str:
        argv = [pgbench, "-h", pg_instance.host, "-p", str(port), *args, dbname]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    run(pg_instance.port, "-i", "-s", "1", "-q")

    def tps(port: int) -> float:
        out = run(port, "-S", "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(PGBENCH_SECONDS))
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        if found is None:
            raise RuntimeError(f"no tps in pgbench output: {out[-500:]}")
        return float(found.group(1))

    rates = interleave({name: functools.partial(tps, port) for name, port in pg_ports.items()})
    ratio = report_rounds(capsys, "pgbench_select_only", "transactions/s", rates, clients=CLIENTS)
    assert ratio["median"] >= ALARM_RATIO


def rabbit_params(pika, rabbit_instance, port: int):
    params = pika.URLParameters(rabbit_instance.url)
    params.host, params.port = rabbit_instance.host, port
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    params.connection_attempts = 1
    return params


def test_rabbitmq_publish_consume_throughput(rabbit_instance, rabbit_ports, capsys):
    """Publish, wait for its confirm, then basic_get it: one at a time (not the target)."""
    pika = pytest.importorskip("pika")
    conns = {}
    try:
        for name, port in rabbit_ports.items():
            conns[name] = pika.BlockingConnection(rabbit_params(pika, rabbit_instance, port))

        def publish_get_loop(conn) -> Callable[[], float]:
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

            return lambda: rate(once)

        rates = interleave({name: publish_get_loop(conn) for name, conn in conns.items()})
    finally:
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()
    ratio = report_rounds(capsys, "rabbitmq_publish_get", "messages/s", rates)
    assert ratio["median"] >= ALARM_RATIO


def pipelined_rate(pika, params, seconds: float = ROUND_SECONDS) -> float:
    """Publish with confirms, RABBIT_WINDOW in flight, while a consumer acks each delivery.

    Returns messages per second that were both confirmed and consumed, from the moment the
    consumer is ready until the last message published before the deadline is consumed.
    """
    body = b"m" * 256
    props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")
    state: dict[str, object] = {"error": None, "start": 0.0, "end": 0.0}
    outstanding: deque[int] = deque()
    counts = {"published": 0, "consumed": 0}
    publishing = [True]
    channels: dict[str, object] = {}

    def fail(reason: str) -> None:
        if state["error"] is None:
            state["error"] = reason
        if connection.is_open:
            connection.close()  # on_close_callback stops the loop
        else:
            connection.ioloop.stop()

    def finish_if_done() -> None:
        if publishing[0] or outstanding or counts["consumed"] < counts["published"]:
            return
        if not state["end"]:
            state["end"] = time.perf_counter()
            connection.close()

    def pump() -> None:
        channel = channels["pub"]
        while publishing[0] and len(outstanding) < RABBIT_WINDOW:
            channel.basic_publish("", channels["queue"], body, props)
            counts["published"] += 1
            outstanding.append(counts["published"])

    def on_confirm(frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            fail("a publish was nacked")
            return
        if method.multiple:
            while outstanding and outstanding[0] <= method.delivery_tag:
                outstanding.popleft()
        else:
            outstanding.remove(method.delivery_tag)
        pump()
        finish_if_done()

    def on_message(channel, method, _props, _body) -> None:
        channel.basic_ack(method.delivery_tag)
        counts["consumed"] += 1
        finish_if_done()

    def stop_publishing() -> None:
        publishing[0] = False
        finish_if_done()

    def on_consuming(_frame) -> None:
        state["start"] = time.perf_counter()
        connection.ioloop.call_later(seconds, stop_publishing)
        pump()

    def on_sub_open(channel) -> None:
        channels["sub"] = channel
        channel.basic_qos(
            prefetch_count=RABBIT_WINDOW,
            callback=lambda _f: channel.basic_consume(
                channels["queue"], on_message, callback=on_consuming
            ),
        )

    def on_declared(frame) -> None:
        channels["queue"] = frame.method.queue
        connection.channel(on_open_callback=on_sub_open)

    def on_pub_open(channel) -> None:
        channels["pub"] = channel
        channel.confirm_delivery(
            ack_nack_callback=on_confirm,
            callback=lambda _f: channel.queue_declare(
                "", exclusive=True, auto_delete=True, callback=on_declared
            ),
        )

    connection = pika.SelectConnection(
        params,
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_pub_open),
        on_open_error_callback=lambda _conn, exc: fail(f"connect failed: {exc}"),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.call_later(seconds + IO_TIMEOUT, lambda: fail("round timed out"))
    try:
        connection.ioloop.start()
    finally:
        connection.ioloop.close()
    if state["error"] is not None or not state["end"]:
        raise AssertionError(f"pipelined round failed: {state['error'] or 'closed early'}")
    return counts["consumed"] / (state["end"] - state["start"])


def test_rabbitmq_pipelined_throughput(rabbit_instance, rabbit_ports, capsys):
    """TARGET: publish with confirms, 64 in flight, and consume with prefetch, like the
    outbox relay and the feature consumer."""
    pika = pytest.importorskip("pika")
    rates = interleave(
        {
            name: functools.partial(
                pipelined_rate, pika, rabbit_params(pika, rabbit_instance, port)
            )
            for name, port in rabbit_ports.items()
        }
    )
    ratio = report_rounds(
        capsys, "rabbitmq_pipelined", "messages/s", rates, window=RABBIT_WINDOW, target=True
    )
    assert ratio["median"] >= ALARM_RATIO
