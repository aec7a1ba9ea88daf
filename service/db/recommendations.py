"""Read the popular pool and one user's history from the feature tables."""

from __future__ import annotations

from service.db.connect import with_prepare
from service.ranking import Candidate

POPULAR = """
SELECT item_id, category_id, score FROM item_popularity
ORDER BY score DESC, item_id
LIMIT %(pool)s
"""

# Prepared once per connection: planning would cost more than these two index range scans.
HISTORY_STATEMENT = "reco_user_history"
PREPARE_HISTORY = """
PREPARE reco_user_history (text, integer) AS
SELECT 1, category_id::bigint, weight FROM user_category_affinity WHERE user_id = $1
UNION ALL
(SELECT 2, item_id, interactions::float8 FROM user_item_interactions WHERE user_id = $1
 ORDER BY last_at DESC NULLS LAST LIMIT $2)
"""
EXECUTE_HISTORY = "EXECUTE reco_user_history (%(user_id)s, %(max_seen)s)"


def popular(cur, pool: int) -> list[Candidate]:
    """Return the ``pool`` most popular items."""
    cur.execute(POPULAR, {"pool": pool})
    return [Candidate(int(r[0]), r[1], float(r[2])) for r in cur.fetchall()]


def history(cur, user_id: str, max_seen: int = 1000) -> tuple[dict[int, float], set[int]]:
    """Return the user's category affinities and the items they interacted with most recently."""
    sql = with_prepare(cur, HISTORY_STATEMENT, PREPARE_HISTORY, EXECUTE_HISTORY)
    cur.execute(sql, {"user_id": user_id, "max_seen": max_seen})
    affinity: dict[int, float] = {}
    seen: set[int] = set()
    for kind, key, value in cur.fetchall():
        if kind == 1:
            affinity[int(key)] = float(value)
        else:
            seen.add(int(key))
    return affinity, seen
