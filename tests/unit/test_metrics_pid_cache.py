"""The cached process id that multiprocess metrics read follows fork()."""

from __future__ import annotations

import os

from prometheus_client import values

from service import metrics


def test_cached_pid_is_refreshed_in_a_forked_child(monkeypatch):
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    metrics.cache_process_id()
    metrics.cache_process_id()  # idempotent: one fork hook, one value class
    assert values.ValueClass._pid_cached
    assert metrics._pid["value"] == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, str(metrics._pid["value"] == os.getpid()).encode())
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"True"
    finally:
        os.close(read)
        os.waitpid(child, 0)
