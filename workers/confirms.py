"""Bookkeeping of publisher confirms: delivery tags, multiple acks, nacks and returns."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Hashable


class ConfirmTracker:
    """Match broker acks/nacks to published keys for one confirm-mode channel.

    Delivery tags count from 1 per channel, in publish order. A ``basic.return`` comes
    before the ``basic.ack`` of the same message, so a returned key fails even when its ack
    arrives: the broker acks unroutable messages.
    """

    def __init__(self) -> None:
        self._next_tag = 1
        # Insertion order equals tag order, so a multiple ack pops from the front.
        self._pending: dict[int, Hashable] = {}
        self._returned: dict[Hashable, str] = {}
        self._results: dict[Hashable, str | None] = {}  # None = confirmed

    @property
    def outstanding(self) -> int:
        """Count publishes still waiting for their confirm."""
        return len(self._pending)

    @property
    def next_tag(self) -> int:
        return self._next_tag

    def published(self, key: Hashable) -> int:
        """Record one publish of ``key``; return its delivery tag."""
        tag = self._next_tag
        self._next_tag += 1
        self._pending[tag] = key
        return tag

    def returned(self, key: Hashable, reason: str) -> None:
        """Record a basic.return for ``key``: its coming ack does not mean it was queued."""
        # A return precedes its ack, so a live one names a pending key. One for a publish
        # forgotten by a reset would otherwise fail that key's next, clean publish.
        if key in self._pending.values():
            self._returned[key] = reason

    def on_confirm(self, frame) -> None:
        """pika confirm callback: route a Basic.Ack or Basic.Nack frame to ack() or nack()."""
        import pika.spec

        method = frame.method
        if isinstance(method, pika.spec.Basic.Ack):
            self.ack(method.delivery_tag, method.multiple)
        else:
            self.nack(method.delivery_tag, method.multiple)

    def ack(self, tag: int, multiple: bool = False) -> int:
        """Apply a basic.ack; return how many publishes it settled."""
        return self._settle(tag, multiple, None)

    def nack(self, tag: int, multiple: bool = False) -> int:
        """Apply a basic.nack; every covered publish fails."""
        return self._settle(tag, multiple, "nacked by broker")

    def settled_through(self, tag: int) -> bool:
        """Tell whether every publish with a delivery tag up to ``tag`` has its confirm."""
        return not self._pending or next(iter(self._pending)) > tag

    def fail_outstanding(self, reason: str) -> int:
        """Fail every unconfirmed publish (timeout, channel or connection closed)."""
        count = len(self._pending)
        for key in self._pending.values():
            self._results.setdefault(key, reason)
        self._pending.clear()
        self._returned.clear()
        return count

    def forget(self) -> None:
        """Drop all state but the tag counter (late confirms of forgotten tags are ignored)."""
        self._pending.clear()
        self._returned.clear()
        self._results.clear()

    def take(
        self, keys: Collection[Hashable] | None = None
    ) -> tuple[list[Hashable], dict[Hashable, str]]:
        """Return and forget settled (acked, failed) results, of ``keys`` only if given."""
        if keys is None:
            chosen = list(self._results)
        else:
            chosen = [key for key in keys if key in self._results]
        acked, failed = [], {}
        for key in chosen:
            reason = self._results.pop(key)
            if reason is None:
                acked.append(key)
            else:
                failed[key] = reason
        return acked, failed

    def _settle(self, tag: int, multiple: bool, failure: str | None) -> int:
        if multiple:
            tags = list(itertools.takewhile(lambda t: t <= tag, self._pending))
        else:
            tags = [tag] if tag in self._pending else []
        for settled in tags:
            key = self._pending.pop(settled)
            returned = self._returned.pop(key, None)
            self._results[key] = failure or returned
        return len(tags)
