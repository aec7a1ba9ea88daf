"""Rank candidate items for a user: popularity re-ranked by category affinity, seen demoted."""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable

SEEN_FACTOR = 0.2
AFFINITY_BOOST = 1.5


def base_score(popularity: float) -> float:
    return math.log1p(max(popularity, 0.0))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A popular item: its id, category and popularity score."""

    item_id: int
    category_id: int | None
    popularity: float


@dataclasses.dataclass(frozen=True)
class Ranked:
    item_id: int
    score: float
    reason: str


def rank_popular(pool: list[Candidate]) -> list[Ranked]:
    """The ranking for a user without history: popularity order, ties on item id."""
    ranked = [Ranked(c.item_id, round(base_score(c.popularity), 6), "popular") for c in pool]
    ranked.sort(key=lambda r: (-r.score, r.item_id))
    return ranked


class RankingPool:
    """The popular candidates with their history-free ranking, indexed by item and category.

    Built once per refresh of the cached pool; every request ranks against it.
    """

    def __init__(self, candidates: Iterable[Candidate]):
        self.candidates = list(candidates)
        self.popular = rank_popular(self.candidates)
        self.by_item = {c.item_id: c for c in self.candidates}
        self.base = {c.item_id: base_score(c.popularity) for c in self.candidates}
        self.by_category: dict[int, list[Candidate]] = {}
        for c in self.candidates:
            if c.category_id is not None:
                self.by_category.setdefault(c.category_id, []).append(c)

    def __len__(self) -> int:
        return len(self.candidates)


def _touched(
    pool: RankingPool, affinity: dict[int, float], max_affinity: float, seen: set[int]
) -> dict[int, Candidate]:
    """The candidates whose score the user's history changes, by item id."""
    touched: dict[int, Candidate] = {}
    if max_affinity > 0:
        for category, weight in affinity.items():
            if weight:
                for c in pool.by_category.get(category, ()):
                    touched[c.item_id] = c
    if len(seen) < len(pool):
        for item_id in seen:
            found = pool.by_item.get(item_id)
            if found is not None:
                touched[item_id] = found
    else:
        for c in pool.candidates:
            if c.item_id in seen:
                touched[c.item_id] = c
    return touched


def rank(pool: RankingPool, affinity: dict[int, float], seen: set[int], limit: int) -> list[Ranked]:
    """Return up to ``limit`` items, best first; ties break on item id for determinism.

    An item's score is its popularity's log, raised by up to AFFINITY_BOOST for the user's
    affinity to its category (relative to their strongest) and cut to SEEN_FACTOR when seen.
    """
    if limit <= 0:
        return []
    max_affinity = max(affinity.values(), default=0.0)
    keyed = []
    touched = _touched(pool, affinity, max_affinity, seen)
    base = pool.base
    for c in touched.values():
        weight = affinity.get(c.category_id, 0.0) if c.category_id is not None else 0.0
        share = weight / max_affinity if max_affinity > 0 else 0.0
        score = base[c.item_id] * (1.0 + AFFINITY_BOOST * share)
        reason = "affinity" if share > 0 else "popular"
        if c.item_id in seen:
            score *= SEEN_FACTOR
            reason = "seen"
        keyed.append((-round(score, 6), c.item_id, reason))
    # Every other candidate keeps its history-free score, so they keep their popular order
    # and only the first ``limit`` of them can make the cut: history only costs its own size.
    kept = 0
    for r in pool.popular:
        if kept == limit:
            break
        if r.item_id not in touched:
            keyed.append((-r.score, r.item_id, r.reason))
            kept += 1
    best = heapq.nsmallest(limit, keyed)
    return [Ranked(item_id, -negated, reason) for negated, item_id, reason in best]
