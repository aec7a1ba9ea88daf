"""LISTEN outbox: wake the relay when rows commit (a hint only; the relay polls as well)."""

from __future__ import annotations

import select
import time

import psycopg2
from pika.adapters.select_connection import IOLoop

from service.db.connect import connect
from service.settings import Settings


class OutboxListener:
    """An autocommit connection LISTENing on ``outbox``, watched by the AMQP ioloop if any."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn = None
        self.woken = False
        self._watched: tuple[int, int] | None = None  # (id(ioloop), fd)
        self._ioloop: IOLoop | None = None

    def ensure(self) -> None:
        """Connect and LISTEN unless already listening."""
        if self.conn is not None and not self.conn.closed:
            return
        conn = connect(self.settings, "relay")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("LISTEN outbox")
        self.conn = conn
        self._watched = None

    def watch(self, ioloop: IOLoop) -> None:
        """Have ``ioloop`` drain notifications as they arrive (they set ``woken``)."""
        if self.conn is None or self.conn.closed:
            return
        key = (id(ioloop), self.conn.fileno())
        if self._watched != key:
            self.unwatch()
            ioloop.add_handler(key[1], lambda _fd, _events: self.drain(), IOLoop.READ)
            self._watched, self._ioloop = key, ioloop

    def unwatch(self) -> None:
        """Stop the ioloop watching the socket (before it closes or the loop changes)."""
        if self._watched is not None and self._ioloop is not None:
            try:
                self._ioloop.remove_handler(self._watched[1])
            except Exception:  # noqa: BLE001, S110 - the loop or the fd may already be gone
                pass
        self._watched, self._ioloop = None, None

    def drain(self) -> None:
        """Consume pending notifications; a broken connection is dropped (and wakes us)."""
        self.woken = True
        if self.conn is None:
            return
        try:
            self.conn.poll()
            self.conn.notifies.clear()
        except psycopg2.Error:
            self.close()

    def sleep(self, timeout: float) -> None:
        """Without an AMQP ioloop: block on the socket itself, or just sleep."""
        if self.conn is not None and not self.conn.closed:
            select.select([self.conn], [], [], timeout)
            self.drain()
        else:
            time.sleep(timeout)

    def close(self) -> None:
        self.unwatch()
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass
