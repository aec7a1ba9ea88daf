"""A tiny threaded TCP relay for tests: forward, or black-hole (hold data, never close)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Relay 127.0.0.1:<port> to an upstream; ``blackhole()`` makes it silent but open."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._black = threading.Event()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, name="tcpproxy", daemon=True)
        self._thread.start()

    def blackhole(self) -> None:
        """Stop forwarding anything; keep every connection open and accept new ones silently."""
        self._black.set()

    def heal(self) -> None:
        """Forward again (connections opened meanwhile stay silent until closed)."""
        self._black.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                elif not self._black.is_set():
                    self._pump(key.fileobj, key.data)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        if self._black.is_set():
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        for sock, peer in ((client, upstream), (upstream, client)):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, peer)

    def _pump(self, sock, peer) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock, peer)
            return
        try:
            peer.setblocking(True)
            peer.settimeout(2)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(sock, peer)

    def _drop(self, *socks) -> None:
        for sock in socks:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        """Stop the relay and close every socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            if isinstance(sock, socket.socket):  # the selector holds only sockets
                sock.close()
        for sock in self._held:
            sock.close()
        self._selector.close()
