"""Assemble the proxies, the API and the metrics, and run them on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

from chaos.faultproxy import VERSION, addresses, httpio, log
from chaos.faultproxy.api import Api
from chaos.faultproxy.collection import ProxyCollection
from chaos.faultproxy.httpio import serve_client
from chaos.faultproxy.metrics import Metrics


class Server:
    """The whole server: a proxy collection behind the HTTP API."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474):
        self.host = host
        self.port = port
        self.metrics = Metrics()
        self.proxies = ProxyCollection(self.metrics)
        self.api = Api(self.proxies, self.metrics)
        self.http: asyncio.Server | None = None
        self.clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind the API; raise OSError or AddrError if that fails."""
        # net.JoinHostPort: an IPv6 literal needs brackets.
        host = f"[{self.host}]" if ":" in self.host else self.host
        ip, port = await addresses.resolve(f"{host}:{self.port}")
        sock, shown = addresses.bind(ip, port)
        self.port = sock.getsockname()[1]
        # A header line may be as long as Go's whole head limit (asyncio's default is 64 KB).
        self.http = await asyncio.start_server(self._client, sock=sock, limit=httpio.HEAD_LIMIT)
        log.info(
            "Starting Toxiproxy HTTP server",
            host=self.host,
            port=str(self.port),
            address=shown,
            version=VERSION,
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.clients.add(task)
        try:
            await serve_client(reader, writer, self.api.handle)
        except asyncio.CancelledError:
            # Shutdown cancels us. Ending normally matters: for a cancelled client task,
            # asyncio's stream callback (Python 3.11) logs a CancelledError traceback.
            pass
        finally:
            self.clients.discard(task)

    async def populate_file(self, path: str) -> None:
        """Apply a /populate file at start; errors are only logged, as in Go."""
        try:
            body = Path(path).read_bytes()
        except OSError as exc:
            log.error("Error reading config file", config=path, error=str(exc))
            return
        async with self.api.lock:
            done, problem = await self.proxies.populate(body)
        if problem is not None:
            log.error("Failed to populate proxies from file", config=path, error=problem.message)
        else:
            log.info("Populated proxies from file", config=path, proxies=len(done))

    async def close(self) -> None:
        """Stop the API, every proxy and every open connection."""
        if self.http is not None:
            self.http.close()
        for task in list(self.clients):
            task.cancel()
        self.proxies.stop_all()
        # Let aborted transports report connection_lost before the loop goes away.
        for _ in range(50):
            if not self.metrics.open and not self.clients:
                break
            await asyncio.sleep(0.01)


async def serve(host: str, port: int, config: str | None = None) -> int:
    """Run until SIGINT or SIGTERM; return the process exit code."""
    server = Server(host, port)
    try:
        await server.start()
    except (OSError, addresses.AddrError) as exc:
        log.emit("fatal", "Failed to start HTTP server", error=str(exc))
        return 1
    if config:
        await server.populate_file(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("Event loop", loop=f"{type(loop).__module__}.{type(loop).__name__}")
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("Shutting down", signal="received")
    await server.close()
    return 0


def dump(value: object) -> str:
    """Return compact JSON, for diagnostics."""
    return json.dumps(value, separators=(",", ":"))
