"""The indexed ranking returns exactly what scoring and sorting every candidate returns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.ranking import (
    AFFINITY_BOOST,
    SEEN_FACTOR,
    Candidate,
    Ranked,
    RankingPool,
    base_score,
    rank,
)


def rank_every_candidate(
    pool: list[Candidate], affinity: dict[int, float], seen: set[int], limit: int
) -> list[Ranked]:
    """The reference: score each candidate, sort all of them, cut at ``limit``."""
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


popularity = st.one_of(st.sampled_from([0.0, 1.0, 10.0, -3.0]), st.floats(-5, 1e6))
candidates = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(1, 6)), popularity), max_size=60
).map(lambda rows: [Candidate(i, cat, pop) for i, (cat, pop) in enumerate(rows, start=1)])
weights = st.sampled_from([0.0, 1.0, 2.5]) | st.floats(-2, 50)
affinities = st.dictionaries(st.integers(1, 8), weights)
seen_items = st.sets(st.integers(1, 80), max_size=70)


@settings(max_examples=400, deadline=None)
@given(candidates, affinities, seen_items, st.integers(1, 70))
def test_indexed_ranking_equals_the_reference(pool, affinity, seen, limit):
    assert rank(RankingPool(pool), affinity, seen, limit) == rank_every_candidate(
        pool, affinity, seen, limit
    )
