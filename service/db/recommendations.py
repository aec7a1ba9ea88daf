"""Read the feature tables for one user's recommendation candidates in one round trip."""

from __future__ import annotations

from service.ranking import Candidate

# One query: the popular pool plus the user's affinity and history, joined by item/category.
CANDIDATES = """
WITH pool AS (
    SELECT item_id, category_id, score
    FROM item_popularity
    ORDER BY score DESC, item_id
    LIMIT %(pool)s
)
SELECT p.item_id, p.score, COALESCE(a.weight, 0), (s.item_id IS NOT NULL)
FROM pool p
LEFT JOIN user_category_affinity a
       ON a.user_id = %(user_id)s AND a.category_id = p.category_id
LEFT JOIN user_item_interactions s
       ON s.user_id = %(user_id)s AND s.item_id = p.item_id
"""


def candidates(cur, user_id: str, pool: int) -> list[Candidate]:
    """Return the candidate pool annotated for ``user_id``."""
    cur.execute(CANDIDATES, {"user_id": user_id, "pool": pool})
    return [Candidate(int(r[0]), float(r[1]), float(r[2]), bool(r[3])) for r in cur.fetchall()]
