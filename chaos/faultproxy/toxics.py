"""Toxic types: their attributes, validation, and how each one treats chunks on a link."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chaos.faultproxy.gojson import Float32

if TYPE_CHECKING:
    from chaos.faultproxy.link import Chunk, Link

# Attribute names per type, in the order Go prints them.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
    "noop": (),
}
DIRECTIONS = ("upstream", "downstream")
# Cap sleeps so absurd attribute values cannot overflow the event loop's clock arithmetic.
MAX_SLEEP = 10 * 365 * 24 * 3600.0
# How far a bandwidth schedule may fall behind (a busy loop) and still be made up.
CATCH_UP = 0.02

Forward = Callable[["Chunk | None"], Awaitable[None]]


class Toxic:
    """A named toxic of one proxy, shared by every link of its direction."""

    __slots__ = ("name", "type", "stream", "direction", "toxicity", "attributes")

    def __init__(self, name: str, type_: str, stream: str, toxicity: float, attributes: dict):
        self.name = name
        self.type = type_
        self.stream = stream
        self.direction = stream.lower()
        self.toxicity = toxicity
        self.attributes = attributes

    def to_json(self) -> dict[str, Any]:
        """Return the toxic in Go's field order."""
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": Float32(self.toxicity),
        }


def check_attributes(type_: str, attrs: dict[str, int]) -> str | None:
    """Return why attributes would crash or hang the Go server, or None when they are fine."""
    if type_ == "bandwidth" and attrs["rate"] < 0:
        return "invalid attributes: bandwidth rate must not be negative"
    if type_ == "slicer":
        if attrs["average_size"] < 1:
            return "invalid attributes: slicer average_size must be at least 1"
        if attrs["size_variation"] < 0:
            return "invalid attributes: slicer size_variation must not be negative"
        if attrs["size_variation"] >= attrs["average_size"]:
            return "invalid attributes: slicer size_variation must be smaller than average_size"
    return None


def _seconds(milliseconds: float) -> float:
    return min(milliseconds / 1000.0, MAX_SLEEP)


class Stage:
    """One toxic running on one link; every chain change restarts it and re-rolls toxicity."""

    def __init__(self, toxic: Toxic, link: Link):
        self.toxic = toxic
        self.link = link
        self.active = False
        self.removed = False
        self.removed_at = 0
        self.forward: Forward

    def attr(self, name: str) -> int:
        return self.toxic.attributes[name]

    def restart(self) -> None:
        """Start a fresh run: roll toxicity and reset per-run state."""
        self.active = random.random() < self.toxic.toxicity
        self.reset()

    def reset(self) -> None:
        """Clear state that lasts one run only."""

    def close(self) -> None:
        """Release timers when the stage leaves the link."""

    def cleanup(self) -> bool:
        """Run as the toxic is removed; True if that closed the stage (Go's CleanupToxic)."""
        return False

    async def process(self, item: Chunk | None) -> None:
        """Handle one chunk (None is end of stream) and forward what survives."""
        await self.forward(item)


class LatencyStage(Stage):
    async def process(self, item: Chunk | None) -> None:
        if not self.active or item is None:
            await self.forward(item)
            return
        delay = self.attr("latency")
        jitter = self.attr("jitter")
        if jitter > 0:
            delay += random.randrange(-jitter, jitter)
        # Count from the chunk's arrival, and carry the new time on so stacked latency adds up.
        target = item.ts + _seconds(delay)
        if await self.link.wait(self, target - self.link.loop.time()):
            item.ts = target
        await self.forward(item)


class BandwidthStage(Stage):
    def reset(self) -> None:
        # Loop time by which the data passed so far is due to have left; a restart starts
        # afresh, as Go's restarted stage does with its sleep at zero.
        self.due = self.link.loop.time()

    async def process(self, item: Chunk | None) -> None:
        if not self.active or item is None:
            await self.forward(item)
            return
        rate = self.attr("rate")
        if rate <= 0:
            # Rate 0 holds the stream until the toxic changes, like Go's endless empty writes.
            await self.link.wait(self, None)
            await self.forward(item)
            return
        loop = self.link.loop
        data, ts = item.data, item.ts
        # Go sums its sleeps, which is exact only because its stages run beside each other.
        # Here writes and other links take loop time between sleeps, so keep a schedule:
        # a chunk already waiting leaves when the previous one's time is up (lag is made up,
        # to a bound), and one that arrived later is delayed from its arrival, as in Go.
        self.due = max(self.due, ts, loop.time() - CATCH_UP)
        piece = rate * 100
        while len(data) > piece:
            self.due += 0.1
            if not await self.link.wait(self, self.due - loop.time()):
                await self.forward(self.link.chunk(data, ts))
                return
            await self.forward(self.link.chunk(data[:piece], ts))
            data = data[piece:]
        self.due += _seconds(len(data) / rate)
        await self.link.wait(self, self.due - loop.time())
        await self.forward(self.link.chunk(data, ts))


class SlowCloseStage(Stage):
    async def process(self, item: Chunk | None) -> None:
        if item is None:
            while self.active and not self.removed:
                if await self.link.wait(self, _seconds(self.attr("delay"))):
                    break
        await self.forward(item)


class TimeoutStage(Stage):
    timer: asyncio.TimerHandle | None = None

    def __init__(self, toxic: Toxic, link: Link):
        super().__init__(toxic, link)
        self.shut = False  # its output is closed: nothing passes it again, as in Go
        self.passing = False  # a chunk that got past it (inactive roll) is still on its way

    def reset(self) -> None:
        self.close()
        if self.active:
            self._arm()

    def _arm(self) -> None:
        timeout = self.attr("timeout")
        if timeout > 0 and not self.shut and not self.link.ended:
            self.timer = self.link.loop.call_later(_seconds(timeout), self.close_output)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def cleanup(self) -> bool:
        # Removal closes the output whatever the roll, as Go's Cleanup does.
        self.close_output()
        return True

    def close_output(self) -> None:
        """End the stream from here on: the stages after this one still act on the end."""
        self.close()
        if self.shut:
            return
        self.shut = True
        if not self.passing:
            self.link.end_after(self)

    async def process(self, item: Chunk | None) -> None:
        if self.shut:
            return  # Go's stage has returned and nothing reads its input any more
        if self.active and item is not None:
            # Data is dropped, and each chunk restarts the timer (Go re-arms it every loop).
            self.close()
            self._arm()
            return
        self.close()
        self.passing = True
        try:
            await self.forward(item)
        finally:
            self.passing = False
        if self.shut:
            # Closed while a chunk was past it: the end follows that chunk, never overtakes it.
            self.link.end_after(self)


class ResetPeerStage(Stage):
    async def process(self, item: Chunk | None) -> None:
        if not self.active:
            await self.forward(item)
            return
        # The first chunk (or end of stream) is swallowed; the wait cannot be interrupted.
        timeout = self.attr("timeout")
        if timeout > 0:
            await asyncio.sleep(_seconds(timeout))
        await self.forward(None)


class SlicerStage(Stage):
    def cuts(self, size: int) -> list[int]:
        """Split [0, size) around midpoints until pieces are average_size ± size_variation."""
        average = max(self.attr("average_size"), 1)
        variation = min(max(self.attr("size_variation"), 0), average - 1)
        bounds = [0]
        pending = [(0, size)]
        while pending:
            start, end = pending.pop()
            if (end - start) - average <= variation:
                bounds.append(end)
                continue
            mid = start + (end - start) // 2
            if variation > 0:
                mid += random.randrange(2 * variation) - variation
            mid = min(max(mid, start + 1), end - 1)
            pending.append((mid, end))
            pending.append((start, mid))
        return bounds

    async def process(self, item: Chunk | None) -> None:
        if not self.active or item is None:
            await self.forward(item)
            return
        data, ts = item.data, item.ts
        bounds = self.cuts(len(data))
        delay = self.attr("delay") / 1_000_000
        for i in range(1, len(bounds)):
            await self.forward(self.link.chunk(data[bounds[i - 1] : bounds[i]], ts))
            # Go waits after every piece, the last one too, so the next chunk waits as well.
            if not await self._pause(delay):
                if bounds[i] < len(data):
                    await self.forward(self.link.chunk(data[bounds[i] :], ts))
                return

    async def _pause(self, delay: float) -> bool:
        if delay > 0:
            return await self.link.wait(self, min(delay, MAX_SLEEP))
        # Without a delay a 32 KB chunk is thousands of writes; let the API and other links run.
        return await self.link.take_turn(self)


class LimitDataStage(Stage):
    def __init__(self, toxic: Toxic, link: Link):
        super().__init__(toxic, link)
        self.sent = 0  # Belongs to the link and survives restarts and updates.

    async def process(self, item: Chunk | None) -> None:
        if not self.active or item is None:
            await self.forward(item)
            return
        limit = self.attr("bytes")
        remaining = max(limit - self.sent, 0)
        if remaining < len(item.data):
            item.data = item.data[:remaining]
        if item.data:
            self.sent += len(item.data)
            await self.forward(item)
        if limit - self.sent <= 0:
            await self.forward(None)


STAGES: dict[str, type[Stage]] = {
    "latency": LatencyStage,
    "bandwidth": BandwidthStage,
    "slow_close": SlowCloseStage,
    "timeout": TimeoutStage,
    "reset_peer": ResetPeerStage,
    "slicer": SlicerStage,
    "limit_data": LimitDataStage,
    "noop": Stage,
}
