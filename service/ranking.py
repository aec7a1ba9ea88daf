"""Rank candidate items for a user: popularity re-ranked by category affinity, seen demoted."""

from __future__ import annotations

import dataclasses
import math

SEEN_FACTOR = 0.2
AFFINITY_BOOST = 1.5


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An item with its popularity, the user's affinity to its category, and whether seen."""

    item_id: int
    popularity: float
    affinity: float
    seen: bool


@dataclasses.dataclass(frozen=True)
class Ranked:
    item_id: int
    score: float
    reason: str


def rank(candidates: list[Candidate], limit: int) -> list[Ranked]:
    """Return up to ``limit`` items, best first; ties break on item id for determinism."""
    max_affinity = max((c.affinity for c in candidates), default=0.0)
    scored = []
    for c in candidates:
        base = math.log1p(max(c.popularity, 0.0))
        share = c.affinity / max_affinity if max_affinity > 0 else 0.0
        score = base * (1.0 + AFFINITY_BOOST * share)
        reason = "affinity" if share > 0 else "popular"
        if c.seen:
            score *= SEEN_FACTOR
            reason = "seen"
        scored.append(Ranked(c.item_id, round(score, 6), reason))
    scored.sort(key=lambda r: (-r.score, r.item_id))
    return scored[:limit]
