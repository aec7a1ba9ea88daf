"""Helpers for the conformance suite: an API caller, local TCP servers and socket reads."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

API_TIMEOUT = 5.0
IO_TIMEOUT = 5.0


class Api:
    """Call the server under test with a timeout on every request and no redirects."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", API_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def listen_port(proxy: dict) -> int:
    """Return the port of a proxy's resolved listen address."""
    return int(proxy["listen"].rsplit(":", 1)[1])


def error_of(response: requests.Response) -> str:
    return response.json()["error"]


def assert_error(response: requests.Response, status: int, message: str) -> None:
    """Check Go's apiError framing: text/plain, nosniff, JSON body and a trailing newline."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.content.endswith(b"}\n")
    assert response.json() == {"error": message, "status": status}


class TcpServer:
    """A threaded TCP server on 127.0.0.1 running handler(conn) per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]):
        self.handler = handler
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(0.5)
            self.handler(conn, self.stopping)

    def close(self) -> None:
        self.stopping.set()
        self._acceptor.join(5)
        self.sock.close()
        for thread in self.threads:
            thread.join(5)


def echo(conn: socket.socket, stopping: threading.Event) -> None:
    """Send back everything received until the peer closes."""
    while not stopping.is_set():
        try:
            data = conn.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        conn.sendall(data)


def greet_and_close(payload: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """Return a handler that sends payload and closes at once."""

    def handler(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(payload)

    return handler


class Recorder:
    """A handler that keeps every recv() result, to see how bytes were cut."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def __call__(self, conn: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            self.pieces.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


def connect(port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int, timeout: float = IO_TIMEOUT) -> bytes:
    """Read size bytes or fail when the deadline passes or the peer closes."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(data)} of {size} bytes")
        sock.settimeout(left)
        piece = sock.recv(size - len(data))
        if not piece:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += piece
    return bytes(data)


def read_until_closed(sock: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[bytes, str]:
    """Read until EOF, reset or timeout; return (data, "eof" | "reset" | "timeout")."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), "timeout"
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            return bytes(data), "timeout"
        except ConnectionResetError:
            return bytes(data), "reset"
        if not piece:
            return bytes(data), "eof"
        data += piece


def roundtrip(sock: socket.socket, payload: bytes, timeout: float = IO_TIMEOUT) -> float:
    """Send payload, read the same number of bytes back, and return the seconds taken."""
    start = time.monotonic()
    sock.sendall(payload)
    echoed = recv_exactly(sock, len(payload), timeout)
    assert echoed == payload
    return time.monotonic() - start


def wait_for(probe: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll probe until true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


def gauge(metrics_text: str, name: str) -> float | None:
    """Return the value of an unlabelled sample in Prometheus text, or None."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None
