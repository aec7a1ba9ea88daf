"""Migrations against the private PostgreSQL: concurrency, drift, missing and pending files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2

from migrations.files import SQL_DIR
from migrations.runner import applied, check, up


def _copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


def _fresh_db(pg_instance, name: str) -> str:
    conn = psycopg2.connect(pg_instance.url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return pg_instance.url.rsplit("/", 1)[0] + f"/{name}"


def test_two_concurrent_runners_apply_each_file_once(pg_instance):
    url = _fresh_db(pg_instance, "mig_concurrent")
    cmd = [sys.executable, "-m", "migrations", "up", "--database-url", url]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied_lines = [
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied ")
    ]
    files = sorted(p.name for p in SQL_DIR.glob("*.sql"))
    assert sorted(line.split()[1] for line in applied_lines) == files
    assert sorted(v[0] for v in applied(url).values()) == files
    conn = psycopg2.connect(url, connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
        assert cur.fetchone()[0] == 5000
    conn.close()


def test_check_names_a_drifted_file(pg_instance, tmp_path):
    url = _fresh_db(pg_instance, "mig_drift")
    sql_dir = _copy_sql(tmp_path)
    up(url, sql_dir, log=lambda _m: None)
    assert check(url, sql_dir).ok
    target = sql_dir / "0002_events.sql"
    target.write_text(target.read_text() + "\n-- edited after it was applied\n")
    report = check(url, sql_dir)
    assert not report.ok
    assert any("0002_events.sql" in p and "drift" in p for p in report.problems)
    result = subprocess.run(
        [sys.executable, "-m", "migrations", "check", "--database-url", url, "--dir", str(sql_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "0002_events.sql" in result.stdout


def test_check_reports_missing_and_pending_files(pg_instance, tmp_path):
    url = _fresh_db(pg_instance, "mig_missing")
    sql_dir = _copy_sql(tmp_path)
    up(url, sql_dir, log=lambda _m: None)
    last = sorted(sql_dir.glob("*.sql"))[-1]
    version = int(last.name[:4])
    last.rename(sql_dir / f"{version:04d}_renamed.sql")
    pending = f"{version + 1:04d}_index.sql"
    (sql_dir / pending).write_text("CREATE INDEX events_kind_idx ON events (kind);\n")
    report = check(url, sql_dir)
    assert any("renamed" in p and f"{version:04d}_renamed.sql" in p for p in report.problems)
    assert pending in report.pending
    assert any(f"{pending}:1: index-not-concurrent" in p for p in report.problems)


def test_applied_but_missing_is_reported(pg_instance, tmp_path):
    url = _fresh_db(pg_instance, "mig_gone")
    sql_dir = _copy_sql(tmp_path)
    up(url, sql_dir, log=lambda _m: None)
    last = sorted(sql_dir.glob("*.sql"))[-1]
    last.unlink()
    report = check(url, sql_dir)
    assert f"{last.name}: applied but the file is missing" in report.problems
    drifted = sql_dir / "0002_events.sql"
    drifted.write_text(drifted.read_text() + "\n-- edited after it was applied\n")
    status = subprocess.run(
        [sys.executable, "-m", "migrations", "status", "--database-url", url, "--dir",
         str(sql_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()  # status said "applied" of both, and nothing of the first
    assert any(line.startswith(last.name) and "the database is ahead" in line for line in lines)
    assert any(line.startswith("0002_events.sql") and "checksum drift" in line for line in lines)


def test_fixture_database_is_migrated_and_isolated(database_url, db):
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone()[0] == len(list(SQL_DIR.glob("*.sql")))
        cur.execute("SELECT current_database()")
        assert cur.fetchone()[0].startswith("t_")


CONCURRENT_INDEX = """-- migrate: no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS big_v_idx ON big (v);
"""


def _big_table(tmp_path: Path, rows: str) -> Path:
    """A migrations folder whose first file creates table ``big`` filled with ``rows``."""
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_big.sql").write_text(
        f"CREATE TABLE big (id integer PRIMARY KEY, v integer NOT NULL);\nINSERT INTO big {rows};\n"
    )
    return sql_dir


def test_runners_racing_over_a_concurrent_index_build_neither_deadlock_nor_record_it_invalid(
    pg_instance, tmp_path
):
    """A runner waiting for the lock once held a snapshot the index build waited for: deadlock.

    The build was then the victim in some runs, and the other runner's IF NOT EXISTS recorded
    the invalid index it left as applied.
    """
    url = _fresh_db(pg_instance, "mig_cic_race")
    sql_dir = _big_table(tmp_path, "SELECT g, g % 997 FROM generate_series(1, 200000) g")
    (sql_dir / "0002_big_v_idx.sql").write_text(CONCURRENT_INDEX)
    cmd = [sys.executable, "-m", "migrations", "up", "--database-url", url, "--dir", str(sql_dir)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    conn = psycopg2.connect(url, connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_v_idx'::regclass")
        assert cur.fetchone() == (True,)
    conn.close()
    assert check(url, sql_dir).ok


def test_an_invalid_index_left_by_a_failed_build_is_refused_not_recorded(pg_instance, tmp_path):
    url = _fresh_db(pg_instance, "mig_cic_invalid")
    sql_dir = _big_table(tmp_path, "VALUES (1, 1), (2, 1)")
    up(url, sql_dir, log=lambda _m: None)
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:  # a unique build that fails leaves its index behind, invalid
        try:
            cur.execute("CREATE UNIQUE INDEX CONCURRENTLY big_v_idx ON big (v)")
        except psycopg2.errors.UniqueViolation:
            pass
    (sql_dir / "0002_big_v_idx.sql").write_text(CONCURRENT_INDEX)
    result = subprocess.run(
        [sys.executable, "-m", "migrations", "up", "--database-url", url, "--dir", str(sql_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert "big_v_idx" in result.stderr + result.stdout
    assert 2 not in applied(url)
    assert any("big_v_idx" in p for p in check(url, sql_dir).problems)
    with conn.cursor() as cur:
        cur.execute("DROP INDEX CONCURRENTLY big_v_idx")
    conn.close()
    up(url, sql_dir, log=lambda _m: None)  # dropped as told: the next run builds it
    assert check(url, sql_dir).ok
