"""A black-holed database (TCP acknowledged, the server silent) must not freeze the workers.

Keepalives and tcp_user_timeout never fire while a proxy acknowledges every packet, and the
server's statement_timeout never starts: only a client-side bound on each wait for the server
lets the worker fail its iteration, back off, stay live and answer SIGTERM.
"""

from __future__ import annotations

import dataclasses
import time

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import WorkerProcess, assert_audit, pending_rows, wait_until
from harness.tcpproxy import TcpProxy
from workers.main import db_wait_budget_s

worker_procs = plugin.worker_procs


def _iteration_failures(worker: WorkerProcess) -> list[dict]:
    return worker.logged("worker iteration failed; backing off")


def test_workers_fail_fast_stay_live_and_recover_while_the_database_is_black_holed(
    settings, pg_instance, tmp_path, worker_procs
):
    proxy = TcpProxy(pg_instance.host, pg_instance.port)
    try:
        proxied = dataclasses.replace(
            settings,
            database_url=settings.database_url.replace(f":{pg_instance.port}/", f":{proxy.port}/"),
            backoff_max_s=1.0,
        )
        budget = db_wait_budget_s(proxied)
        relay = WorkerProcess.start("relay", proxied, tmp_path)
        consumer = WorkerProcess.start("consumer", proxied, tmp_path)
        worker_procs.extend([relay, consumer])
        seed_outbox(settings.database_url, make_events(50, users=10), with_events=True)
        wait_until(lambda: pending_rows(settings.database_url) == 0, 30, "the first drain")

        proxy.blackhole()
        started = time.monotonic()
        seed_outbox(settings.database_url, make_events(50, users=10), with_events=True)
        wait_until(lambda: _iteration_failures(relay), budget + 10, "the relay to give up a wait")
        # One bound, not one per queued database job (two or three of them queue up).
        assert time.monotonic() - started < budget + 3
        assert {r["error"] for r in _iteration_failures(relay)} <= {
            "DeadlineExceeded",
            "OperationalError",
        }
        assert relay.healthy() and consumer.healthy()  # liveness never waits on the database

        proxy.heal()
        wait_until(lambda: pending_rows(settings.database_url) == 0, 60, "the drain after healing")
        assert_audit(settings)
        for worker in (relay, consumer):
            stopped = time.monotonic()
            assert worker.stop(timeout=30) == 0
            assert time.monotonic() - stopped < 15
    finally:
        proxy.close()
