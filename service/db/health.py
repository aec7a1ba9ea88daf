"""Readiness probe SQL."""

from __future__ import annotations

MIGRATED_VERSIONS = "SELECT coalesce(max(version), 0), count(*) FROM schema_migrations"


def migrated(cur) -> tuple[int, int]:
    """Return (highest applied version, number applied)."""
    cur.execute(MIGRATED_VERSIONS)
    top, count = cur.fetchone()
    return int(top), int(count)
