"""Loopback stand-ins for the API: an HTTP handler served from a thread for one test."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

# A guardrail file whose one rule every run passes: tests that judge how a run starts, stops
# and reports, not the service.
NEVER_BREACHES = '[[rule]]\nname = "anything"\nexpr = "count >= 0"\n'


class AnswerAll(http.server.BaseHTTPRequestHandler):
    """Reads get an empty list of items, writes are accepted, anything else is found."""

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
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yield its base URL, stop it afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
