"""What the simulated clients send and how they react, free of Locust so it can be unit-tested."""

from __future__ import annotations

import bisect
import datetime as dt
import email.utils
import itertools
import json
import random
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

READ_NAME = "/v1/users/[id]/recommendations"
WRITE_NAME = "/v1/events"
STATUS_NAME = "/v1/events/[id]"
SURFACES = ("home", "home", "home", "item", "cart", "email")  # home dominates real traffic
LIMITS = (10, 20, 20, 50)
KINDS = ("view", "click", "purchase")
KIND_WEIGHTS = (80, 17, 3)
ITEMS = 5000
SHED_STATUSES = frozenset({429, 503})  # a shed when it carries Retry-After (is_shed)
# Statuses whose outcome is unknown to the client: a proxy gave up, the write may have landed.
UNKNOWN_STATUSES = frozenset({502, 504})


class Zipf:
    """Draw ranks 1..n with probability proportional to 1 / rank**s (a few hot keys)."""

    def __init__(self, n: int, s: float = 1.1):
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.cumulative = list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))

    def draw(self, rng: random.Random) -> int:
        return bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1]) + 1


def user_id(rank: int) -> str:
    return f"u-{rank}"


def idempotency_key() -> str:
    """A fresh Idempotency-Key header value (an RFC 8941 string: quoted)."""
    return f'"{uuid.uuid4()}"'


def rfc3339_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_batch(rng: random.Random, users: Zipf, items: Zipf, size: int) -> dict:
    """A valid POST /v1/events body with fresh event ids."""
    now = rfc3339_now()
    return {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "user_id": user_id(users.draw(rng)),
                "item_id": items.draw(rng),
                "kind": rng.choices(KINDS, KIND_WEIGHTS)[0],
                "occurred_at": now,
            }
            for _ in range(size)
        ]
    }


def batch_size(rng: random.Random) -> int:
    """Mostly single events, sometimes a burst from a client's buffer."""
    return rng.choice((1, 1, 1, 2, 3, 5, 10))


def is_shed(status: int | None, retry_after: str | None) -> bool:
    """An intended shed: 429 or 503 with Retry-After; without it the refusal is a failure."""
    return status in SHED_STATUSES and bool(retry_after and retry_after.strip())


def status_poll(rng: random.Random, recent: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """The event id to poll and the statuses that are right for it.

    An id from ``recent`` got a 202, and its row committed before that answer and is never
    deleted: anything but 200 means an accepted write is invisible. Only the random id used
    before any write was accepted may be unknown (404).
    """
    if recent:
        return rng.choice(recent), (200,)
    return str(uuid.uuid4()), (200, 404)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    base = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - base)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    rng: random.Random,
    base: float = 0.25,
    cap: float = 5.0,
) -> float | None:
    """Wait before retry ``attempt`` (1-based): at least Retry-After, plus capped full jitter.

    Returns None when the server asks for more than ``cap``: waiting that long inside a load
    test would silently stop the generator, so the client gives up and records it.
    """
    floor = retry_after or 0.0
    if floor > cap:
        return None
    jitter = rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return min(cap, floor + jitter)


def classify(status: int | None, error: BaseException | str | None = None) -> str:
    """Jepsen-style outcome of a write: ok (2xx), fail (definitely not applied) or info."""
    if status and 200 <= status < 300:
        return "ok"
    if status in UNKNOWN_STATUSES:
        return "info"
    if status and (400 <= status < 500 or status == 503):
        return "fail"  # the API promises a 4xx or 503 committed nothing
    if not status and isinstance(error, ConnectionRefusedError):
        return "fail"  # never reached the server
    return "info"  # timeouts, resets, other 5xx: the write may or may not have landed


class History:
    """One JSON line per operation, flushed so a crash loses nothing; one file per test.

    The first write replaces what an earlier test left in the file; a write after ``close``
    (a request that finished while the test stopped) appends to this test's lines.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self._mode = "w"

    def record(self, **fields) -> None:
        line = json.dumps(fields, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, self._mode, encoding="utf-8", buffering=1)  # noqa: SIM115
                self._mode = "a"
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
