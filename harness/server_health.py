"""What a run did to the API's workers and the database's sessions: timeouts, crashes, stuck ones.

``mark(log)`` notes where the API's log ends before a run; ``worker_events(mark)`` counts
gunicorn's own lines written since: worker timeouts, workers that died other than by a
graceful SIGTERM, and workers booted (none, with ``max_requests`` off, unless one died).
``idle_in_transaction`` counts sessions stuck idle in a transaction past a timeout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import psycopg2

TIMEOUT = re.compile(r"WORKER TIMEOUT \(pid:\d+\)")
# "Worker (pid:N) exited with code C." or "was sent SIGKILL!" (SIGTERM is a graceful stop).
CRASH = re.compile(r"Worker \(pid:\d+\) (?:exited with code \d+|was sent (?!SIGTERM)\w+)")
BOOT = re.compile(r"Booting worker with pid: \d+")


class LogMark(NamedTuple):
    """A log file and its size when the run began."""

    path: Path | None
    offset: int


def mark(path: str | Path | None) -> LogMark:
    """Remember where ``path`` ends now (0 when it does not exist yet)."""
    if not path:
        return LogMark(None, 0)
    path = Path(path)
    try:
        return LogMark(path, path.stat().st_size)
    except OSError:
        return LogMark(path, 0)


def written_since(log: LogMark) -> str:
    """The text appended to the log after the mark (all of it if the file was replaced)."""
    if log.path is None:
        return ""
    try:
        with open(log.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(log.offset if log.offset <= size else 0)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def worker_events(log: LogMark) -> dict[str, int]:
    """Gunicorn worker timeouts, crashes and boots logged since the mark."""
    text = written_since(log)
    return {
        "worker_timeouts": len(TIMEOUT.findall(text)),
        "worker_crashes": len(CRASH.findall(text)),
        "worker_boots": len(BOOT.findall(text)),
    }


def idle_in_transaction(database_url: str, older_than_s: float = 30.0) -> int:
    """Sessions idle in a transaction for longer than ``older_than_s`` (there should be none)."""
    conn = psycopg2.connect(database_url, connect_timeout=5, options="-c statement_timeout=5000")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                " AND now() - state_change > make_interval(secs => %s)",
                (older_than_s,),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()
