"""Apply forward-only migrations under an advisory lock and check for drift."""

from __future__ import annotations

import dataclasses
import time
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
INVALID_INDEXES = """
SELECT i.indexrelid::regclass::text FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1
"""
LOCK_POLL_S = 0.1
LOCK_WAIT_S = 600.0  # a runner gives up waiting for another after this long


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
        _lock(conn, cur, "pg_try_advisory_xact_lock")
        return _apply_unless_recorded(cur, migration)


def _apply_autocommit(conn, migration: Migration) -> bool:
    """Apply a no-transaction file (e.g. CREATE INDEX CONCURRENTLY) under a session lock."""
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            _lock(conn, cur, "pg_try_advisory_lock")
            try:
                applied_now = _apply_unless_recorded(cur, migration, _refuse_invalid_indexes)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            return applied_now
    finally:
        conn.autocommit = False


def _lock(conn, cur, function: str, wait_s: float = LOCK_WAIT_S) -> None:
    """Take the runners' lock by polling: a runner waiting for it must hold no snapshot.

    Blocked in pg_advisory_lock, a waiting runner's statement keeps a snapshot open, and a
    CREATE INDEX CONCURRENTLY under the lock waits for every older snapshot: a deadlock,
    whose victim may be the index build (leaving an invalid index behind).
    """
    deadline = time.monotonic() + wait_s
    while True:
        cur.execute(f"SELECT {function}(%s)", (LOCK_KEY,))
        if cur.fetchone()[0]:
            return
        if not conn.autocommit:
            conn.rollback()  # nor an open transaction while it waits
        if time.monotonic() >= deadline:
            raise MigrationError(f"another migrate run held the lock for over {wait_s:.0f} s")
        time.sleep(LOCK_POLL_S)


def _refuse_invalid_indexes(cur) -> None:
    """Fail, naming them, when indexes are invalid: a failed concurrent build leaves one.

    ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` skips an invalid index of the same name, so
    recording the file would record an index that is never used.
    """
    names = _invalid_indexes(cur)
    if names:
        raise MigrationError(
            f"invalid index(es) {', '.join(names)} (a concurrent build failed): drop each with"
            " DROP INDEX CONCURRENTLY and run migrate up again"
        )


def _apply_unless_recorded(cur, migration: Migration, before_recording=None) -> bool:
    """Under the caller's lock: run the file and record it, unless it is recorded already."""
    cur.execute(CREATE_TABLE)
    cur.execute(SELECT_ONE, {"version": migration.version})
    row = cur.fetchone()
    if row is not None:
        _raise_on_drift(migration, row[0])
        return False
    cur.execute(migration.sql)
    if before_recording is not None:
        before_recording(cur)
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
    report.problems += [f"{name}: invalid index (a concurrent build failed)" for name in
                        invalid_indexes(dsn)]  # fmt: skip
    report.pending = [m.filename for m in migrations if m.version not in recorded]
    for finding in lint_all(migrations, only=set(report.pending)):
        report.problems.append(str(finding))
    return report


def invalid_indexes(dsn: str) -> list[str]:
    """Indexes a failed concurrent build left behind (never used by the planner)."""
    conn = _connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            return _invalid_indexes(cur)
    finally:
        conn.close()


def _invalid_indexes(cur) -> list[str]:
    cur.execute(INVALID_INDEXES)
    return [row[0] for row in cur.fetchall()]


def at_head(dsn: str, directory: Path = SQL_DIR) -> bool:
    """Tell whether every migration file is applied (used by readiness)."""
    migrations, _ = discover(directory)
    return {m.version for m in migrations} <= set(applied(dsn))
