"""The wall clock behind the project's own time decisions; a test-only switch offsets it.

Under the ``wall_clock_offset`` test fault (RECO_ENV=test only) ``now()`` adds the seconds held
in ``RECO_TEST_CLOCK_FILE``, so a chaos run can step a process's clock, backwards too, without
restarting it. Only the decisions read it (queue time, events ahead of the clock) and the
informational stamps beside them; log timestamps stay real, and timeouts, backoff, the breaker
and rate limits keep the monotonic clock, which no wall-clock step moves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from service.settings import Settings

REFRESH_S = 0.2  # a step reaches every process within this; each call stays a comparison


class OffsetClock:
    """``time.time()`` plus the offset a file holds, re-read at most every ``refresh_s``."""

    def __init__(
        self,
        path: str | Path,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        refresh_s: float = REFRESH_S,
    ):
        self.path = Path(path)
        self.wall = wall
        self.monotonic = monotonic
        self.refresh_s = refresh_s
        self._offset = 0.0
        self._read_at: float | None = None

    def offset(self) -> float:
        """The offset in seconds, from the file at most ``refresh_s`` (monotonic) ago."""
        now = self.monotonic()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            self._offset = read_offset(self.path)
            self._read_at = now
        return self._offset

    def now(self) -> float:
        """Unix seconds on the offset clock."""
        return self.wall() + self.offset()


def read_offset(path: Path) -> float:
    """The seconds ``path`` holds; a missing or unreadable file means no offset."""
    try:
        value = float(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def write_offset(path: Path, seconds: float) -> None:
    """Replace the offset at once (a rename, so a reader never sees half a number)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{seconds:g}\n", encoding="ascii")
    partial.replace(path)


_clock: OffsetClock | None = None


def configure(settings: Settings) -> None:
    """Offset this process's clock when the test fault is on; plain ``time.time()`` otherwise."""
    global _clock
    switched = settings.test_fault("wall_clock_offset")  # spelt out: a test lists the switches
    _clock = OffsetClock(settings.test_clock_file) if switched else None


def now() -> float:
    """Unix seconds for a time decision: ``time.time()``, no file access, unless offset."""
    clock = _clock
    return time.time() if clock is None else clock.now()
