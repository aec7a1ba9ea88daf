"""An AMQP connection driven step by step from the worker's own thread (pika SelectConnection).

pika's BlockingChannel waits one round trip per message in confirm mode; the async channel
lets many publishes be in flight. Instead of handing the thread to ``ioloop.start()``, the
worker calls :meth:`Link.step` with a bounded timeout, so its loop stays plain, synchronous
code that also owns the PostgreSQL side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection

from service.settings import Settings


class AmqpError(RuntimeError):
    """The broker connection or channel failed, or an operation timed out."""


def _noop() -> None:
    return None


def connection_parameters(settings: Settings, name: str) -> pika.URLParameters:
    """Parameters with heartbeat, blocked-connection, socket and stack timeouts set."""
    params = pika.URLParameters(settings.amqp_url)
    params.heartbeat = settings.amqp_heartbeat_s
    params.blocked_connection_timeout = settings.amqp_blocked_timeout_s
    params.socket_timeout = settings.amqp_socket_timeout_s
    params.stack_timeout = settings.amqp_socket_timeout_s * 2
    params.connection_attempts = 1
    params.retry_delay = 0
    params.client_properties = {"connection_name": f"reco-{name}"}
    return params


class Link:
    """One connection and one channel, opened, stepped and closed by the caller."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name
        self.generation = 0  # bumps on every open; deliveries of older generations are stale
        self.ioloop: IOLoop | None = None
        self.connection: SelectConnection | None = None
        self.channel: pika.channel.Channel | None = None
        self.error: BaseException | None = None
        self._opened = False
        self._channel_close_callbacks: list[Callable[[BaseException], None]] = []

    # -- state ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Tell whether the channel is open and no failure was seen."""
        return (
            self.error is None
            and self.channel is not None
            and self.channel.is_open
            and self.connection is not None
            and self.connection.is_open
        )

    def on_channel_closed(self, callback: Callable[[BaseException], None]) -> None:
        """Call ``callback(error)`` when the channel or connection goes away."""
        self._channel_close_callbacks.append(callback)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self, timeout: float | None = None) -> None:
        """Connect and open a channel; raise AmqpError if that fails within ``timeout``."""
        self.close()
        timeout = timeout or self.settings.amqp_socket_timeout_s * 3
        self.error = None
        self._opened = False
        self.ioloop = IOLoop()
        self.ioloop.activate_poller()
        self.connection = SelectConnection(
            connection_parameters(self.settings, self.name),
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self.ioloop,
        )
        if not self.wait_for(lambda: self._opened or self.error is not None, timeout):
            self.error = AmqpError(f"AMQP connect timed out after {timeout:.1f}s")
        if self.error is not None:
            error = self.error
            self.close()
            raise AmqpError(f"AMQP connect failed: {error!r}") from None
        self.generation += 1

    def _on_connection_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        self._opened = True

    def _on_connection_error(self, _connection: Any, error: BaseException) -> None:
        self.error = error

    def _on_connection_closed(self, _connection: Any, error: BaseException) -> None:
        self._fail(error)

    def _on_channel_closed(self, _channel: Any, error: BaseException) -> None:
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        for callback in self._channel_close_callbacks:
            callback(error)

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection (bounded wait) and release the ioloop; never raise."""
        connection, ioloop = self.connection, self.ioloop
        self.connection = self.channel = None
        self.ioloop = None
        if connection is not None and ioloop is not None:
            try:
                if connection.is_open:
                    connection.close()
                deadline = time.monotonic() + timeout
                while not connection.is_closed and time.monotonic() < deadline:
                    _poll(ioloop, deadline - time.monotonic())
            except Exception:  # noqa: BLE001, S110 - closing a broken link must not raise
                pass
        if ioloop is not None:
            try:
                ioloop.close()
            except Exception:  # noqa: BLE001, S110
                pass

    # -- I/O ------------------------------------------------------------------------------
    def step(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for I/O and dispatch callbacks and timers."""
        if self.ioloop is None:
            raise AmqpError("AMQP link is not open")
        _poll(self.ioloop, timeout)

    def wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Step until ``ready()`` or the link fails or ``timeout`` passes; return ready()."""
        deadline = time.monotonic() + timeout
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.error is not None and self._opened):
                return ready()
            self.step(remaining)
        return True

    def call(self, start: Callable[[Callable[[Any], None]], None], timeout: float) -> Any:
        """Run an async channel method that takes a completion callback; return its frame."""
        box: list[Any] = []
        start(box.append)
        if not self.wait_for(lambda: bool(box), timeout):
            raise AmqpError(self._why("operation timed out"))
        return box[0]

    def require(self) -> pika.channel.Channel:
        """Return the open channel or raise AmqpError."""
        if not self.alive:
            raise AmqpError(self._why("AMQP channel is not open"))
        assert self.channel is not None
        return self.channel

    def _why(self, what: str) -> str:
        return f"{what}: {self.error!r}" if self.error is not None else what


def _poll(ioloop: IOLoop, timeout: float) -> None:
    # A timer bounds the poller's wait; without it poll() may block up to 5 s.
    handle = ioloop.call_later(max(0.0, timeout), _noop)
    try:
        ioloop.poll()
        ioloop.process_timeouts()
    finally:
        ioloop.remove_timeout(handle)
