"""Apply forward-only migrations under an advisory lock and check for drift."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg2

from migrations.files import SQL_DIR, Migration, discover
from migrations.lint import lint_all

# Any fixed 64-bit key works; all runners against one database must agree on it.
LOCK_KEY = 0x7265636F5F6D6967  # "reco_mig"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    filename   text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, filename, sha256, applied_at FROM schema_migrations ORDER BY 1"
SELECT_ONE = "SELECT sha256 FROM schema_migrations WHERE version = %(version)s"
INSERT_APPLIED = """
INSERT INTO schema_migrations (version, filename, sha256)
VALUES (%(version)s, %(filename)s, %(sha256)s)
"""
TABLE_EXISTS = "SELECT to_regclass('public.schema_migrations') IS NOT NULL"


class MigrationError(RuntimeError):
    """A migration could not be applied or the history does not match the files."""


class ChecksumDrift(MigrationError):
    """An applied migration's file has changed since (or the database came from elsewhere)."""


@dataclasses.dataclass
class Report:
    """The outcome of `check`: every problem, each naming its file."""

    problems: list[str] = dataclasses.field(default_factory=list)
    pending: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.pending


def _connect(dsn: str):
    return psycopg2.connect(dsn, connect_timeout=5, application_name="reco-migrate")


def applied(dsn: str) -> dict[int, tuple[str, str, object]]:
    """Return {version: (filename, sha256, applied_at)} recorded in the database."""
    conn = _connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(TABLE_EXISTS)
            if not cur.fetchone()[0]:
                return {}
            cur.execute(SELECT_APPLIED)
            return {row[0]: (row[1], row[2], row[3]) for row in cur.fetchall()}
    finally:
        conn.close()


def up(dsn: str, directory: Path = SQL_DIR, log=print) -> list[str]:
    """Apply every pending migration, each in its own transaction; return the applied names."""
    migrations, problems = discover(directory)
    if problems:
        raise MigrationError("; ".join(problems))
    done: list[str] = []
    conn = _connect(dsn)
    try:
        for migration in migrations:
            if _apply_one(conn, migration):
                done.append(migration.filename)
                log(f"applied {migration.filename}")
    finally:
        conn.close()
    return done


def _apply_one(conn, migration: Migration) -> bool:
    """Apply one file unless recorded; the xact lock serialises concurrent runners."""
    if not migration.transactional:
        return _apply_autocommit(conn, migration)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        return _apply_unless_recorded(cur, migration)


def _apply_autocommit(conn, migration: Migration) -> bool:
    """Apply a no-transaction file (e.g. CREATE INDEX CONCURRENTLY) under a session lock."""
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                return _apply_unless_recorded(cur, migration)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.autocommit = False


def _apply_unless_recorded(cur, migration: Migration) -> bool:
    """Under the caller's lock: run the file and record it, unless it is recorded already."""
    cur.execute(CREATE_TABLE)
    cur.execute(SELECT_ONE, {"version": migration.version})
    row = cur.fetchone()
    if row is not None:
        _raise_on_drift(migration, row[0])
        return False
    cur.execute(migration.sql)
    cur.execute(INSERT_APPLIED, dataclasses.asdict(migration))
    return True


def _raise_on_drift(migration: Migration, recorded_sha: str) -> None:
    if recorded_sha != migration.sha256:
        raise ChecksumDrift(f"{migration.filename}: checksum drift since it was applied")


def check(dsn: str, directory: Path = SQL_DIR) -> Report:
    """Compare files with the recorded history: names, order, drift, missing, pending, lint."""
    migrations, problems = discover(directory)
    report = Report(problems=list(problems))
    recorded = applied(dsn)
    by_version = {m.version: m for m in migrations}
    for version, (filename, sha, _) in recorded.items():
        migration = by_version.get(version)
        if migration is None:
            report.problems.append(f"{filename}: applied but the file is missing")
        elif migration.filename != filename:
            report.problems.append(f"{migration.filename}: renamed, recorded as {filename}")
        elif migration.sha256 != sha:
            report.problems.append(f"{filename}: checksum drift since it was applied")
    report.pending = [m.filename for m in migrations if m.version not in recorded]
    for finding in lint_all(migrations, only=set(report.pending)):
        report.problems.append(str(finding))
    return report


def at_head(dsn: str, directory: Path = SQL_DIR) -> bool:
    """Tell whether every migration file is applied (used by readiness)."""
    migrations, _ = discover(directory)
    return {m.version for m in migrations} <= set(applied(dsn))
