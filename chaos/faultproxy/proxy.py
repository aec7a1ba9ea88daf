"""A named proxy: its listener, its toxics and its open connections."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from chaos.faultproxy import addresses, log
from chaos.faultproxy.chain import ToxicChain
from chaos.faultproxy.connection import BufferedEndpoint, Connection, Endpoint, StreamEndpoint
from chaos.faultproxy.errors import ApiError

if TYPE_CHECKING:
    from chaos.faultproxy.metrics import Metrics


# One read may take up to 128 KB; links cut it into Go-sized 32 KB chunks for toxics.
READ_SIZE = 128 * 1024


def endpoint_class() -> type[Endpoint]:
    """The endpoint protocol that reads most cheaply on the running event loop."""
    choice = os.environ.get("FAULTPROXY_READS", "")
    if choice == "stream":
        return StreamEndpoint
    if choice == "buffered":
        return BufferedEndpoint
    loop = asyncio.get_running_loop()
    return StreamEndpoint if type(loop).__module__.startswith("uvloop") else BufferedEndpoint


class AlreadyStarted(Exception):
    """start() on a proxy that is already listening."""


class Proxy:
    """Listen on one address and forward every accepted client to the upstream."""

    def __init__(self, metrics: Metrics, name: str, listen: str, upstream: str):
        self.metrics = metrics
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics = ToxicChain(self)
        self.server: asyncio.Server | None = None
        self.connections: set[Connection] = set()
        # Counts stops: a client accepted by a listener since closed carries an older one.
        self.generation = 0
        self.read_buffer = memoryview(bytearray(READ_SIZE))
        self.endpoint_class: type[Endpoint] = endpoint_class()

    def to_json(self) -> dict[str, Any]:
        """Return the proxy in Go's field order; Logger is always {} as Go prints it."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": self.toxics.to_json(),
        }

    async def start(self) -> None:
        """Listen on the stored address and store the address actually bound."""
        if self.enabled:
            raise AlreadyStarted(self.name)
        try:
            ip, port = await addresses.resolve(self.listen)
        except addresses.AddrError as exc:
            raise ApiError(500, f"listen tcp: {exc}") from None
        try:
            sock, shown = addresses.bind(ip, port)
        except OSError as exc:
            raise ApiError(500, addresses.bind_error(ip, port, exc)) from None
        loop = asyncio.get_running_loop()
        generation = self.generation
        self.server = await loop.create_server(
            lambda: Connection(self, generation).client, sock=sock, backlog=addresses.BACKLOG
        )
        self.listen = shown
        self.enabled = True
        log.info("Started proxy", name=self.name, proxy=self.listen, upstream=self.upstream)

    def stop(self) -> None:
        """Close the listener and every open connection, both sides."""
        if not self.enabled:
            return
        self.enabled = False
        self.generation += 1
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections):
            conn.abort()
        log.info("Terminated proxy", name=self.name, proxy=self.listen, upstream=self.upstream)

    async def differs(self, listen: str, upstream: str) -> bool:
        """Tell whether listen (resolved, as in Toxiproxy 2.12) or upstream would change."""
        try:
            resolved = await addresses.resolved_text(listen)
        except addresses.AddrError as exc:
            raise ApiError(500, str(exc)) from None
        return self.listen != resolved or self.upstream != upstream

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Restart on a new address or upstream; start or stop when only enabled changes."""
        if await self.differs(listen, upstream):
            self.stop()
            self.listen = listen
            self.upstream = upstream
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                self.stop()

    def connection_opened(self, conn: Connection) -> None:
        conn.labels = (self.name, self.listen, self.upstream)
        self.connections.add(conn)
        self.metrics.connection_opened(conn)

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.metrics.connection_closed(conn)
