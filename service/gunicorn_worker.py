"""gunicorn's sync worker with a timeout on every client socket read and write."""

from __future__ import annotations

import socket

from gunicorn.workers.sync import SyncWorker

from service.settings import Settings


class TimedSyncWorker(SyncWorker):
    """A sync worker whose client sockets time out after ``RECO_CLIENT_TIMEOUT_S`` of silence.

    gunicorn reads a request and writes its answer on a blocking socket with no timeout: a
    client that stalled in its head or body held the worker until the 30 s ``timeout``
    backstop killed it (WORKER TIMEOUT, a reset for that client). Here a stalled read ends
    like a disconnect: during the head gunicorn closes the connection without an answer (as
    nginx does), during the body the app answers 408 (service/middleware.py), and the worker
    goes on serving.
    """

    client_timeout_s: float | None = None

    def init_process(self) -> None:
        # Validated in the master (gunicorn.conf.py), so it cannot fail here.
        self.client_timeout_s = Settings.from_env().client_timeout_s or None
        super().init_process()

    def handle(self, listener, client, addr) -> None:
        if self.client_timeout_s:
            # Family, type and protocol given: from a bare fileno, Python asks the kernel for
            # each (three system calls a request).
            client = TimedSocket(client.family, client.type, client.proto, client.detach())
            client.settimeout(self.client_timeout_s)  # per recv and send, as nginx's timeouts
        super().handle(listener, client, addr)


class TimedSocket(socket.socket):
    """A client socket on which a read that timed out reads as the end of the stream.

    gunicorn takes an empty read for a client gone (a debug line) but logs any other socket
    error as an ERROR with a traceback, one per stalled client; ``timed_out`` lets the app
    tell a stall (408) from a disconnect.
    """

    timed_out = False

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            self.timed_out = True
            return b""
