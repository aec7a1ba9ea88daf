"""A worker whose server refuses connections backs off as documented, not in a tight loop.

The backoff starts at 0.1 s and doubles (half fixed, half jitter), so three seconds hold at
most seven attempts. The relay once retried thousands of times a second: its idle wait
returns at once after it lost its connections, and the backoff waited through it.
"""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import WorkerProcess, wait_until

worker_procs = plugin.worker_procs

WINDOW_S = 3.0
MOST_ATTEMPTS = 10  # seven by the schedule, with room for a slow start


@pytest.fixture
def refused_port():
    """A loopback port that refuses connections: bound, never listening, held by this test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _failures(worker: WorkerProcess) -> list[dict]:
    return [
        r for r in worker.log_records() if r.get("msg") == "worker iteration failed; backing off"
    ]


@pytest.mark.parametrize(
    ("kind", "refused"),
    [("relay", "database"), ("relay", "broker"), ("consumer", "broker")],
)
def test_a_refused_server_is_retried_on_the_backoff_schedule(
    settings, tmp_path, worker_procs, refused_port, kind, refused
):
    if refused == "database":
        changed = {"database_url": f"postgresql://reco:x@127.0.0.1:{refused_port}/reco"}
    else:
        changed = {"amqp_url": f"amqp://guest:guest@127.0.0.1:{refused_port}/%2F"}
    worker = WorkerProcess.start(kind, dataclasses.replace(settings, **changed), tmp_path)
    worker_procs.append(worker)
    wait_until(lambda: _failures(worker), 15, f"the {kind} to fail its first iteration")
    first = time.monotonic()
    time.sleep(WINDOW_S)  # the measurement is how many attempts fit in this window
    attempts = len(_failures(worker))
    assert 2 <= attempts <= MOST_ATTEMPTS, (attempts, time.monotonic() - first)
    assert worker.healthy()  # backing off is alive
    assert worker.stop(timeout=15) == 0
