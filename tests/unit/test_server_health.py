"""Gunicorn's worker events counted from the part of the log a run wrote, not the whole file."""

from __future__ import annotations

from harness import server_health

BEFORE = """\
[2026-12-06 04:56:42 +0000] [5310] [INFO] Booting worker with pid: 5311
[2026-12-06 04:56:42 +0000] [5310] [CRITICAL] WORKER TIMEOUT (pid:5311)
{"path": "/v1/events", "status": 202}
"""
DURING = """\
{"path": "/v1/events", "status": 202}
[2026-12-06 05:00:01 +0000] [5310] [CRITICAL] WORKER TIMEOUT (pid:5312)
[2026-12-06 05:00:01 +0000] [5310] [ERROR] Worker (pid:5312) was sent SIGKILL! Perhaps out of
[2026-12-06 05:00:01 +0000] [5310] [INFO] Booting worker with pid: 6001
[2026-12-06 05:00:02 +0000] [5310] [ERROR] Worker (pid:5313) exited with code 1.
[2026-12-06 05:00:02 +0000] [5310] [INFO] Booting worker with pid: 6002
[2026-12-06 05:00:03 +0000] [5310] [INFO] Worker (pid:5314) was sent SIGTERM!
"""


def test_only_lines_written_after_the_mark_count(tmp_path) -> None:
    log = tmp_path / "api.log"
    log.write_text(BEFORE)
    mark = server_health.mark(log)
    with open(log, "a") as fh:
        fh.write(DURING)
    assert server_health.worker_events(mark) == {
        "worker_timeouts": 1,
        "worker_crashes": 2,  # SIGKILL and exit code 1; a graceful SIGTERM is not a crash
        "worker_boots": 2,
    }


def test_a_replaced_or_missing_log_is_read_from_the_start_or_not_at_all(tmp_path) -> None:
    log = tmp_path / "api.log"
    log.write_text(BEFORE * 10)
    mark = server_health.mark(log)
    log.write_text(DURING)  # rotated: shorter than the mark
    assert server_health.worker_events(mark)["worker_timeouts"] == 1
    assert server_health.mark(tmp_path / "absent.log").offset == 0
    nothing = server_health.worker_events(server_health.mark(None))
    assert nothing == {"worker_timeouts": 0, "worker_crashes": 0, "worker_boots": 0}
