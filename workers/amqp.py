"""An AMQP connection driven step by step from the worker's own thread (pika SelectConnection).

pika's BlockingChannel waits one round trip per message in confirm mode; the async channel
lets many publishes be in flight. Instead of handing the thread to ``ioloop.start()``, the
worker calls :meth:`Link.step` with a bounded timeout, so its loop stays plain, synchronous
code that also owns the PostgreSQL side.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection

from service.settings import Settings

# Longest wait for a database job during which the link is stepped: far above any job the
# statement timeouts allow (a retention purge is bounded rounds of them). Past it, or once the
# link has failed, the caller blocks on the job as a plain future.result() would.
DB_WAIT_STEPPED_S = 600.0


class AmqpError(RuntimeError):
    """The broker connection or channel failed, or an operation timed out."""


class PublishRefused(RuntimeError):
    """The broker confirmed publishes without queueing them (returned unroutable, or nacked)."""


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
            if isinstance(error, pika.exceptions.IncompatibleProtocolError):
                # pika's name for a connection that closed before the broker's first frame: a
                # network, proxy or broker that went away, not a protocol mismatch.
                raise AmqpError(
                    f"AMQP connect failed: closed before the handshake ended ({error!r})"
                ) from None
            raise AmqpError(f"AMQP connect failed: {error!r}") from None
        self.generation += 1

    def reopen_channel(self, timeout: float | None = None) -> pika.channel.Channel:
        """Open a new channel on the open connection after the broker closed the last one."""
        if self.connection is None or not self.connection.is_open:
            raise AmqpError(self._why("AMQP connection is not open"))
        timeout = timeout or self.settings.amqp_socket_timeout_s * 3
        self.error, self.channel, self._opened = None, None, False
        self.connection.channel(on_open_callback=self._on_channel_open)
        if not self.wait_for(lambda: self._opened or self.error is not None, timeout):
            raise AmqpError(f"AMQP channel open timed out after {timeout:.1f}s")
        channel = self.require()
        self.generation += 1  # a new channel: tags of the old one can no longer be acked
        return channel

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

    def wait_result(
        self, future: concurrent.futures.Future, timeout: float = DB_WAIT_STEPPED_S
    ) -> Any:
        """Return ``future.result()``, stepping the ioloop while the job runs.

        For database jobs on a helper thread: a slow one (a retention purge, a commit waiting
        on locks) must not starve heartbeats and confirms. The job wakes the poller when it
        ends, so no step outlasts it. Callbacks run meanwhile only record (confirms, returns,
        deliveries, notifications); the caller acts on them after this returns.
        """
        if self.alive and not future.done():
            ioloop = self.ioloop
            future.add_done_callback(lambda _job: wake(ioloop))
            self.wait_for(future.done, timeout)  # returns early once the link fails
        return future.result()

    def call(self, start: Callable[[Callable[[Any], None]], None], timeout: float) -> Any:
        """Run an async channel method that takes a completion callback; return its frame."""
        box: list[Any] = []
        start(box.append)
        if not self.wait_for(lambda: bool(box), timeout):
            # The broker closing the channel (e.g. 406 PRECONDITION_FAILED) ends the wait too.
            raise AmqpError(self._why("operation failed" if self.error else "operation timed out"))
        return box[0]

    def ready_count(self, queue: str, timeout: float) -> int:
        """Messages ready in ``queue``, read with a passive declare."""
        channel = self.require()
        frame = self.call(
            lambda cb: channel.queue_declare(queue, passive=True, callback=cb), timeout
        )
        return frame.method.message_count

    def purge(self, queue: str, timeout: float) -> None:
        """Drop every ready message of ``queue``."""
        channel = self.require()
        self.call(lambda cb: channel.queue_purge(queue, callback=cb), timeout)

    def require(self) -> pika.channel.Channel:
        """Return the open channel or raise AmqpError."""
        if not self.alive:
            raise AmqpError(self._why("AMQP channel is not open"))
        assert self.channel is not None
        return self.channel

    def _why(self, what: str) -> str:
        return f"{what}: {self.error!r}" if self.error is not None else what


def wake(ioloop: IOLoop | None) -> None:
    """Interrupt the ioloop's poll from another thread; a closed loop needs no wake-up."""
    if ioloop is None:
        return
    try:
        ioloop.add_callback_threadsafe(_noop)
    except Exception:  # noqa: BLE001, S110 - the loop closed meanwhile
        pass


def _poll(ioloop: IOLoop, timeout: float) -> None:
    # A timer bounds the poller's wait; without it poll() may block up to 5 s.
    handle = ioloop.call_later(max(0.0, timeout), _noop)
    try:
        ioloop.poll()
        ioloop.process_timeouts()
    finally:
        ioloop.remove_timeout(handle)
