"""Rank candidate items for a user: popularity re-ranked by category affinity, seen demoted."""

from __future__ import annotations

import dataclasses
import math

SEEN_FACTOR = 0.2
AFFINITY_BOOST = 1.5


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


def base_score(popularity: float) -> float:
    return math.log1p(max(popularity, 0.0))


def rank_popular(pool: list[Candidate]) -> list[Ranked]:
    """The ranking for a user without history: popularity order, ties on item id."""
    ranked = [Ranked(c.item_id, round(base_score(c.popularity), 6), "popular") for c in pool]
    ranked.sort(key=lambda r: (-r.score, r.item_id))
    return ranked


def rank(
    pool: list[Candidate], affinity: dict[int, float], seen: set[int], limit: int
) -> list[Ranked]:
    """Return up to ``limit`` items, best first; ties break on item id for determinism."""
    max_affinity = max(affinity.values(), default=0.0)
    scored = []
    for c in pool:
        weight = affinity.get(c.category_id, 0.0) if c.category_id is not None else 0.0
        share = weight / max_affinity if max_affinity > 0 else 0.0
        score = base_score(c.popularity) * (1.0 + AFFINITY_BOOST * share)
        reason = "affinity" if share > 0 else "popular"
        if c.item_id in seen:
            score *= SEEN_FACTOR
            reason = "seen"
        scored.append(Ranked(c.item_id, round(score, 6), reason))
    scored.sort(key=lambda r: (-r.score, r.item_id))
    return scored[:limit]
