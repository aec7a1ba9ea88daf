"""Fixtures and helpers for worker tests: worker child processes, a cuttable TCP proxy, AMQP."""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import orjson
import pika
import pytest

from harness.ports import free_port
from service.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """RECO_* variables that rebuild ``settings`` in a child process."""
    env = {}
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            env[field.metadata["env"]] = str(value)
    return env


class WorkerProcess:
    """``python -m workers.<name>`` as a child process, ready once its /healthz answers 200."""

    def __init__(self, name: str, proc: subprocess.Popen, port: int, log_path: Path):
        self.name, self.proc, self.port, self.log_path = name, proc, port, log_path

    @classmethod
    def start(
        cls,
        name: str,
        settings: Settings,
        workdir,
        env: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> WorkerProcess:
        port = free_port()
        log_path = Path(workdir) / f"{name}-{port}.log"
        child_env = {
            **os.environ,
            **settings_env(settings),
            **(env or {}),
            "RECO_METRICS_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our interpreter running a worker module
                [sys.executable, "-m", f"workers.{name}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
            )
        worker = cls(name, proc, port, log_path)
        deadline = time.monotonic() + timeout
        while not worker.healthy():
            if proc.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                raise RuntimeError(f"{name} did not become healthy:\n{worker.log_text()[-2000:]}")
            time.sleep(0.05)
        return worker

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the worker's HTTP port; (status, body)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def healthy(self) -> bool:
        return self.get("/healthz")[0] == 200

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        """The JSON log lines written so far."""
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return records

    def logged(self, msg: str) -> list[dict]:
        """The JSON log lines written so far with this ``msg``."""
        return [r for r in self.log_records() if r.get("msg") == msg]

    def wait_for_log(self, msg: str, timeout: float = 30) -> dict:
        """Wait until a JSON log line with ``msg`` appears; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.logged(msg)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        text = self.log_text()
        excerpt = text if len(text) < 3000 else f"{text[:1500]}\n...\n{text[-1500:]}"
        raise TimeoutError(f"{self.name}: no log {msg!r}:\n{excerpt}")

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout``); return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class TcpProxy:
    """A loopback TCP forwarder whose link can be cut (connections reset, new ones refused)."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.cut_flag = threading.Event()
        self.stopping = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by this proxy's."""
        return url.replace(f"{self.target[0]}:{self.target[1]}", f"127.0.0.1:{self.port}")

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until restore()."""
        self.cut_flag.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _close(sock)

    def restore(self) -> None:
        self.cut_flag.clear()

    def close(self) -> None:
        self.stopping.set()
        self.cut()
        self._thread.join(timeout=5)
        _close(self.listener)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.cut_flag.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(
                target=self._pump, args=(client, upstream), name="tcp-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while not self.stopping.is_set() and not self.cut_flag.is_set():
                for key, _ in selector.select(timeout=0.2):
                    data = cast(socket.socket, key.fileobj).recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """A list to append started WorkerProcess objects to; all are stopped after the test."""
    procs: list[WorkerProcess] = []
    yield procs
    for proc in procs:
        proc.kill()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    """A TcpProxy factory; every proxy made is closed after the test."""
    made: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held by this test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def fault_proxy(tmp_path):
    """A Toxiproxy-compatible server's client (TOXIPROXY_URL, toxiproxy-server, else ours)."""
    from chaos.faultproxy.client import Client
    from chaos.faultproxy.locate import find_server

    server = find_server(log_path=str(tmp_path / "faultproxy.log"))
    try:
        with Client(server.url) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def amqp_channel(rabbit_instance) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A blocking channel to the test broker, for setup, inspection and fault injection."""
    params = pika.URLParameters(rabbit_instance.url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    yield connection.channel()
    if connection.is_open:
        connection.close()


class WorkerObjects:
    """Relays and consumers run in the test process; all are closed after the test."""

    def __init__(self):
        self.made: list = []

    def relay(self, settings: Settings):
        from workers.relay import Relay

        self.made.append(Relay(settings))
        return self.made[-1]

    def consumer(self, settings: Settings):
        from workers.consumer import Consumer

        self.made.append(Consumer(settings))
        return self.made[-1]

    def close(self) -> None:
        for worker in self.made:
            worker.close()


@pytest.fixture
def worker_objects() -> Iterator[WorkerObjects]:
    """Make in-process Relay and Consumer objects that are closed after the test."""
    objects = WorkerObjects()
    yield objects
    objects.close()


def pending_rows(database_url: str) -> int:
    """Count unpublished outbox rows."""
    return scalar(database_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL")


def applied_count(database_url: str) -> int:
    """Count inbox rows (events applied by the feature consumer)."""
    return scalar(database_url, "SELECT count(*) FROM inbox")


def scalar(database_url: str, sql: str) -> int:
    """The one value ``sql`` returns, on a connection of its own."""
    import psycopg2

    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def drain_relay(relay, timeout: float = 30) -> int:
    """Run relay iterations until no row is pending; return how many it published meanwhile.

    (A killed relay's row locks may linger a moment, so an empty claim is not yet the end.)
    """
    published = relay.metrics.registry.get_sample_value
    before, deadline = published("reco_relay_published_total") or 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.run_once() == 0:
            if pending_rows(relay.settings.database_url) == 0:
                return int((published("reco_relay_published_total") or 0) - before)
            relay.wait(0.1)
    raise TimeoutError(f"outbox not drained after {timeout:.0f}s")


def drain_consumer(consumer, expected_applied: int, timeout: float = 30) -> int:
    """Run consumer iterations until ``expected_applied`` inbox rows exist and nothing is left."""
    settled, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        handled = consumer.run_once()
        settled += handled
        if handled == 0:
            if applied_count(consumer.settings.database_url) >= expected_applied:
                return settled
            consumer.wait(0.2)
    raise TimeoutError(f"consumer did not apply {expected_applied} events in {timeout:.0f}s")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def assert_audit(settings: Settings, drain_timeout_s: float = 30, **kwargs):
    """Run the shared invariant audit; fail the test with its violations."""
    from harness.audit import audit

    result = audit(
        settings.database_url,
        settings.amqp_url,
        settings.amqp_namespace,
        drain_timeout_s=drain_timeout_s,
        settle_s=0.3,
        **kwargs,
    )
    assert result.ok, result.violations()
    return result
