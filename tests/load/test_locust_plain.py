"""Plain `locust` with the project's locustfile, used as Locust users do: --json and the web UI.

A loopback stand-in answers every request, so these judge the harness, not the service.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]
RULES = '[[rule]]\nname = "anything"\nexpr = "count >= 0"\n'


class _Answer(http.server.BaseHTTPRequestHandler):
    """Reads get items, writes are accepted, anything else is found."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"items": []}' if "/recommendations" in self.path else b"{}"
        self.send_response(202 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@contextlib.contextmanager
def target() -> Iterator[str]:
    """A loopback stand-in for the API, for the length of a test."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_json_keeps_stdout_a_json_document(tmp_path) -> None:
    """`--json` prints Locust's final stats on stdout: the verdict table goes to stderr."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    with target() as url:
        proc = subprocess.run(  # noqa: S603 - our own locustfile
            [*LOCUST, "--headless", "--host", url, "-u", "2", "-t", "3s", "--json",
             "--run-dir", str(tmp_path / "run"), "--guardrails", str(rules),
             "--metrics-url", "off"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)  # the whole of stdout
    assert sum(entry["num_requests"] for entry in stats) > 0
    assert "PASS: 0 breach(es)" in proc.stderr
