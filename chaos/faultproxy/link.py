"""One direction of a proxied connection: read the source, run the toxic chain, write the dest."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import TYPE_CHECKING

from chaos.faultproxy.toxics import STAGES, Stage, Toxic

if TYPE_CHECKING:
    from chaos.faultproxy.connection import Connection, Endpoint

CHUNK_SIZE = 32 * 1024
# The input queue doubles as Go's 1024-chunk latency buffer; bytes are capped as well.
QUEUE_CHUNKS = 1024
QUEUE_BYTES = 8 * 1024 * 1024
# A worker whose stages never wait hands the event loop (API, other links) back this often.
TURN_SECONDS = 0.005


class Chunk:
    """One socket read (at most 32 KB) and the loop time it arrived."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float):
        self.data = data
        self.ts = ts


class Link:
    """Carry one direction of a connection through its toxics, in order, losing nothing."""

    def __init__(
        self, conn: Connection, direction: str, source: Endpoint, dest: Endpoint, toxics: list
    ):
        self.conn = conn
        self.direction = direction
        self.source = source
        self.dest = dest
        self.loop = asyncio.get_running_loop()
        self.queue: deque[Chunk | None] = deque()
        self.queued_bytes = 0
        self.worker: asyncio.Task | None = None
        self.ended = False
        self.eof = False
        self.received = 0
        self.sent = 0
        self._pauses: set[str] = set()
        # The worker and any end of stream a closed timeout sends on can each be waiting.
        self._waiters: list[tuple[Stage | None, asyncio.Future]] = []
        self._tails: set[asyncio.Task] = set()
        self._drain: asyncio.Future | None = None
        self._turn_ends = 0.0
        self.stages: list[Stage] = []
        for toxic in toxics:
            self.stages.append(self._stage(toxic))
        for stage in self.stages:
            stage.restart()
        source.inbound = self
        dest.outbound = self

    # -- data in -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take bytes read from the source."""
        self.received += len(data)
        if self.ended:
            return
        if not self.stages and self.worker is None:
            # Fast path: no toxics and nothing in flight, so order is kept by writing now.
            self._write(data)
            return
        now = self.loop.time()
        for start in range(0, len(data), CHUNK_SIZE):
            self.queue.append(Chunk(data[start : start + CHUNK_SIZE], now))
        self.queued_bytes += len(data)
        if len(self.queue) >= QUEUE_CHUNKS or self.queued_bytes >= QUEUE_BYTES:
            self._pause("queue")
        self._kick()

    def feed_eof(self) -> None:
        """Take the end of the source stream."""
        if self.eof:
            return
        self.eof = True
        if self.ended:
            return
        if not self.stages and self.worker is None:
            self.end()
            return
        self.queue.append(None)
        self._kick()

    def chunk(self, data: bytes, ts: float) -> Chunk:
        return Chunk(data, ts)

    # -- the chain -----------------------------------------------------------------------

    def _kick(self) -> None:
        if self.worker is None and self.queue:
            self.worker = self.loop.create_task(self._run())

    async def _run(self) -> None:
        self._turn_ends = self.loop.time() + TURN_SECONDS
        try:
            while self.queue and not self.ended:
                item = self.queue.popleft()
                if item is not None:
                    self.queued_bytes -= len(item.data)
                if "queue" in self._pauses and self._below_low_water():
                    self._resume("queue")
                await self._walk(item, 0)
                if self.queue:
                    await self.take_turn()
        finally:
            self.worker = None
            if self.ended:
                self.queue.clear()

    def _below_low_water(self) -> bool:
        return len(self.queue) < QUEUE_CHUNKS // 2 and self.queued_bytes < QUEUE_BYTES // 2

    async def _walk(self, item: Chunk | None, index: int) -> None:
        if self.ended:
            return
        if index < len(self.stages):
            await self.stages[index].process(item)
        else:
            await self._emit(item)

    async def _forward_from(self, stage: Stage, item: Chunk | None) -> None:
        # Chain edits can move or remove a stage mid-chunk, so find its successor each time.
        if stage.removed:
            index = min(stage.removed_at, len(self.stages))
        else:
            index = self.stages.index(stage) + 1
        await self._walk(item, index)

    def end_after(self, stage: Stage) -> None:
        """Send end of stream on from stage, as Go's stage closing its output does.

        The stages after it still act on the end (slow_close delays it, reset_peer waits);
        it travels beside the worker, which the closed stage keeps from reaching them.
        """
        if self.ended:
            return
        index = self.stages.index(stage) + 1
        if index >= len(self.stages):
            self.end()
            return
        tail = self.loop.create_task(self._walk(None, index))
        self._tails.add(tail)
        tail.add_done_callback(self._tails.discard)

    async def _emit(self, item: Chunk | None) -> None:
        if item is None:
            self.end()
            return
        self._write(item.data)
        if self._drain is None and "dest" in self._pauses:
            self._drain = self.loop.create_future()
        if self._drain is not None:
            await self._drain

    def _write(self, data: bytes) -> None:
        transport = self.dest.transport
        if transport is None or self.dest.lost or transport.is_closing():
            return
        transport.write(data)
        self.sent += len(data)

    async def wait(self, stage: Stage, seconds: float | None) -> bool:
        """Sleep for a stage; return False if a chain change interrupted it (None: no limit)."""
        if seconds is not None and seconds <= 0:
            return True
        future = self.loop.create_future()
        handle = None
        if seconds is not None:
            handle = self.loop.call_later(seconds, _settle, future, True)
        return await self._hold(stage, future, handle)

    async def take_turn(self, stage: Stage | None = None) -> bool:
        """Yield once this worker has run a turn without waiting; False if stage was interrupted."""
        if self.loop.time() < self._turn_ends:
            return True
        future = self.loop.create_future()
        # call_soon queues the resume behind the I/O callbacks of the next loop pass.
        handle = self.loop.call_soon(_settle, future, True)
        return await self._hold(stage, future, handle)

    async def _hold(
        self, stage: Stage | None, future: asyncio.Future, handle: asyncio.Handle | None
    ) -> bool:
        waiter = (stage, future)
        self._waiters.append(waiter)
        try:
            return await future
        finally:
            self._waiters.remove(waiter)
            self._turn_ends = self.loop.time() + TURN_SECONDS
            if handle is not None:
                handle.cancel()

    def interrupt(self, stage: Stage) -> None:
        """Cut short the wait of stage, if the chunk in flight is waiting there."""
        for waiting, future in self._waiters:
            if waiting is stage:
                _settle(future, False)

    # -- live chain changes (called by the API, never waits) -----------------------------

    def _stage(self, toxic: Toxic) -> Stage:
        stage = STAGES[toxic.type](toxic, self)
        stage.forward = functools.partial(self._forward_from, stage)
        return stage

    def _find(self, toxic: Toxic) -> Stage | None:
        for stage in self.stages:
            if stage.toxic is toxic:
                return stage
        return None

    def _restart(self, stage: Stage) -> None:
        if not self.ended:
            stage.restart()
        self.interrupt(stage)

    def add_toxic(self, toxic: Toxic) -> None:
        """Append a toxic; the previous last stage restarts, as in Go."""
        previous = self.stages[-1] if self.stages else None
        stage = self._stage(toxic)
        self.stages.append(stage)
        if not self.ended:
            stage.restart()
        if previous is not None:
            self._restart(previous)

    def update_toxic(self, toxic: Toxic) -> None:
        """Restart the toxic's stage so new attributes and a new roll apply at once."""
        stage = self._find(toxic)
        if stage is not None:
            self._restart(stage)

    def remove_toxic(self, toxic: Toxic) -> None:
        """Take a toxic out; its chunk in flight moves on, and a timeout closes the link."""
        stage = self._find(toxic)
        if stage is None:
            return
        if stage.cleanup():
            # As in Go, a stage its cleanup closed stays where it is, passing nothing again.
            return
        index = self.stages.index(stage)
        del self.stages[index]
        stage.removed = True
        stage.removed_at = index
        stage.close()
        self.interrupt(stage)
        if index > 0:
            self._restart(self.stages[index - 1])

    # -- flow control and closing ------------------------------------------------------------

    def dest_paused(self, paused: bool) -> None:
        """Follow the destination's write buffer: stop reading the source while it is full."""
        if paused:
            self._pause("dest")
            return
        self._resume("dest")
        if self._drain is not None:
            _settle(self._drain, None)
            self._drain = None

    def start_reading(self) -> None:
        """Let the source be read (it is paused until both links exist) unless held."""
        transport = self.source.transport
        if not self._pauses and not self.ended and transport is not None and not self.source.lost:
            transport.resume_reading()

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            transport = self.source.transport
            if transport is not None and not self.source.lost:
                transport.pause_reading()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses and not self.ended:
            transport = self.source.transport
            if transport is not None and not self.source.lost:
                transport.resume_reading()

    def end(self) -> None:
        """Finish this direction: stop reading and close the destination (no half-close)."""
        if self.ended:
            return
        self.ended = True
        self.queue.clear()
        self.queued_bytes = 0
        for stage in self.stages:
            stage.close()
        self._pause("ended")
        self.conn.close_endpoint(self.dest)

    def close(self) -> None:
        """Drop everything: the connection is gone."""
        self.ended = True
        self.queue.clear()
        for stage in self.stages:
            stage.close()
        if self.worker is not None:
            self.worker.cancel()
        for tail in list(self._tails):
            tail.cancel()
        if self._drain is not None:
            _settle(self._drain, None)
            self._drain = None

    @property
    def busy(self) -> bool:
        return self.worker is not None or bool(self._tails)


def _settle(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)
