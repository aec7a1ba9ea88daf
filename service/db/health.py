"""Readiness probe SQL."""

from __future__ import annotations

MIGRATED_VERSIONS = """
SELECT coalesce(max(version), 0), count(*) FILTER (WHERE version = ANY(%(known)s))
FROM schema_migrations
"""


def migrated(cur, known: list[int]) -> tuple[int, int]:
    """Return (highest applied version, how many of the ``known`` versions are applied)."""
    cur.execute(MIGRATED_VERSIONS, {"known": known})
    top, count = cur.fetchone()
    return int(top), int(count)
