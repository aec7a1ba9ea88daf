"""An accepted client, its upstream socket, and the two links between them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING

from chaos.faultproxy import addresses
from chaos.faultproxy.link import Link

if TYPE_CHECKING:
    from chaos.faultproxy.proxy import Proxy

# A graceful close that cannot flush (peer not reading) is forced after this long.
CLOSE_GRACE = 10.0
DIAL_TIMEOUT = 60.0
LINGER_RESET = struct.pack("ii", 1, 0)


class Endpoint(asyncio.BaseProtocol):
    """One socket of a proxied connection, feeding the link that reads it (the shared part)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.inbound: Link | None = None
        self.outbound: Link | None = None
        # Reads go into the proxy's one reused buffer and are copied out at once (the loop
        # never interleaves two reads): asyncio's default recv() of a fresh 256 KB bytes
        # object maps and unmaps memory on every read, which dominated round-trip time.
        self._buffer = conn.proxy.read_buffer
        # Bytes (and EOF) that arrive before the link exists: uvloop starts reading right
        # after connection_made, ignoring a pause_reading() made inside it.
        self.early: list[bytes] = []
        self.early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.endpoint_made(self)

    def _hold(self, data: bytes) -> None:
        self.early.append(data)
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.inbound is not None:
            self.inbound.feed_eof()
        else:
            self.early_eof = True
        # Keep the socket open: the other direction closes it when its chain ends.
        return True

    def attach(self, link: Link) -> None:
        """Hand the link what arrived before it existed, in order, then read on."""
        early, self.early = self.early, []
        for data in early:
            link.feed(data)
        if self.early_eof:
            link.feed_eof()
        link.start_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.endpoint_lost(self)

    def pause_writing(self) -> None:
        if self.outbound is not None:
            self.outbound.dest_paused(True)

    def resume_writing(self) -> None:
        if self.outbound is not None:
            self.outbound.dest_paused(False)


class BufferedEndpoint(Endpoint, asyncio.BufferedProtocol):
    """Reads into the proxy's one reused buffer: the cheap way on the standard loop."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        inbound = self.inbound
        if inbound is not None:
            inbound.feed(bytes(self._buffer[:nbytes]))
        else:
            self._hold(bytes(self._buffer[:nbytes]))


class StreamEndpoint(Endpoint, asyncio.Protocol):
    """Fed by data_received: the cheap way on uvloop, which reads into a buffer of its own."""

    def data_received(self, data: bytes) -> None:
        inbound = self.inbound
        if inbound is not None:
            inbound.feed(data)
        else:
            self._hold(data)


class Connection:
    """Accept a client, dial the upstream, and tear both down together."""

    def __init__(self, proxy: Proxy, generation: int):
        self.proxy = proxy
        self.generation = generation
        self.loop = asyncio.get_running_loop()
        self.client = proxy.endpoint_class(self)
        self.upstream: Endpoint | None = None
        self.links: dict[str, Link] = {}
        self.dial: asyncio.Task | None = None
        self.aborted = False
        self.finished = False
        self.labels = ("", "", "")
        self._timers: list[asyncio.TimerHandle] = []

    def endpoint_made(self, endpoint: Endpoint) -> None:
        # Hold bytes in the kernel until both links exist, as Go dials before it copies.
        endpoint.transport.pause_reading()
        if endpoint is self.client:
            if self.generation != self.proxy.generation:
                # Accepted before a stop that closed every connection, handed over after it:
                # close it too, as a disabled proxy must not carry traffic.
                endpoint.transport.close()
                return
            self.proxy.connection_opened(self)
            self.dial = self.loop.create_task(self._dial())
            self.dial.add_done_callback(self._dial_done)

    def _dial_done(self, task: asyncio.Task) -> None:
        # abort() can cancel the dial before it ever runs, and then its finally never does:
        # without this the connection would wait for it forever and never be forgotten.
        if self.dial is task:
            self.dial = None
            self._check_done()

    async def _dial(self) -> None:
        upstream = self.proxy.endpoint_class(self)
        connected = False
        try:
            host, port = addresses.split_host_port(self.proxy.upstream)
            async with asyncio.timeout(DIAL_TIMEOUT):
                await self.loop.create_connection(lambda: upstream, host or "localhost", port)
            connected = True
        except (OSError, ValueError, TimeoutError, addresses.AddrError):
            pass
        finally:
            self.dial = None
            if not connected:
                # Go accepts first and dials after: the client sees a connect, then EOF.
                self.close_endpoint(self.client)
                self._check_done()
        if not connected:
            return
        self.upstream = upstream
        if self.aborted or self.client.lost or upstream.lost:
            self._abort_endpoint(upstream)
            self.close_endpoint(self.client)
            self._check_done()
            return
        toxics = self.proxy.toxics
        if toxics.has_type("reset_peer"):
            # Go sets SO_LINGER 0 on both sockets whatever the toxicity, so closes become RST.
            for endpoint in (self.client, upstream):
                sock = endpoint.transport.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.links["upstream"] = Link(
            self, "upstream", self.client, upstream, toxics.chain("upstream")
        )
        self.links["downstream"] = Link(
            self, "downstream", upstream, self.client, toxics.chain("downstream")
        )
        self.client.attach(self.links["upstream"])
        upstream.attach(self.links["downstream"])

    def endpoint_lost(self, endpoint: Endpoint) -> None:
        if endpoint.inbound is not None:
            endpoint.inbound.feed_eof()
        self._check_done()

    def _check_done(self) -> None:
        ends = [self.client] if self.upstream is None else [self.client, self.upstream]
        if self.dial is None and all(e.lost for e in ends):
            self._finish()

    def close_endpoint(self, endpoint: Endpoint) -> None:
        """Close one socket after flushing what was written to it."""
        transport = endpoint.transport
        if transport is None or endpoint.lost or transport.is_closing():
            return
        transport.close()
        self._timers.append(self.loop.call_later(CLOSE_GRACE, self._abort_endpoint, endpoint))

    def _abort_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint.transport is not None and not endpoint.lost:
            endpoint.transport.abort()

    def abort(self) -> None:
        """Close both sockets now (proxy disabled or deleted)."""
        self.aborted = True
        if self.dial is not None:
            self.dial.cancel()
        for link in self.links.values():
            link.close()
        for endpoint in (self.client, self.upstream):
            if endpoint is not None:
                self._abort_endpoint(endpoint)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for timer in self._timers:
            timer.cancel()
        for link in self.links.values():
            link.close()
        self.proxy.connection_closed(self)

    @property
    def received(self) -> dict[str, int]:
        return {d: link.received for d, link in self.links.items()}
