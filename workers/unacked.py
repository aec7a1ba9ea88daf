"""The deliveries a consumer holds unacked on its channel: the broker's count, as it sees it."""

from __future__ import annotations


class UnackedTags:
    """Delivery tags received on the newest channel and not acked yet.

    Buffered, being applied, or held through a database backoff: the audit reads the count
    (``reco_consumer_unacked_deliveries``) to tell a batch held back from one that was lost.
    A dropped channel's tags stay counted until the next channel delivers: the broker hands
    them back there, and counting too many only makes the audit wait longer.
    """

    def __init__(self) -> None:
        self.generation = -1
        self._tags: set[int] = set()

    def received(self, generation: int, tag: int) -> None:
        if generation != self.generation:
            self.generation, self._tags = generation, set()
        self._tags.add(tag)

    def acked(self, generation: int, tag: int, multiple: bool = False) -> None:
        """Forget ``tag`` (and with ``multiple`` every tag up to it) of channel ``generation``."""
        if generation != self.generation:
            return
        if multiple:
            # Rebound, not mutated: the metrics thread may be counting the old set.
            self._tags = {t for t in self._tags if t > tag}
        else:
            self._tags = self._tags - {tag}

    def __len__(self) -> int:
        return len(self._tags)
