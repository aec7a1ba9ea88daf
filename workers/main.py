"""Start a worker process: settings, JSON logs, metrics and /healthz, signals, the runner."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from service import wallclock
from service.db import deadline
from service.db.connect import ROLE_TIMEOUTS
from service.settings import ConfigError, Settings
from workers import logs
from workers.metrics import Health, serve
from workers.runner import Backoff, Runner, Worker

log = logging.getLogger("reco.worker")

DB_WAIT_MARGIN_S = 2.0  # past the statement timeout, so the server's bound fires first


def main(
    name: str,
    make_metrics: Callable[[], Any],
    make_worker: Callable[[Settings, Any], Worker],
    idle_s: Callable[[Settings], float],
    argv: list[str] | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT; return the process exit code."""
    # No options: settings come from the environment. --help says so instead of starting.
    argparse.ArgumentParser(
        prog=f"python -m workers.{name}",
        description=f"Run the {name} until SIGTERM or SIGINT (a graceful stop).",
        epilog="Settings come from RECO_* environment variables: docs/operations.md, or "
        "`python -m service settings-table`. Metrics and /healthz on RECO_METRICS_PORT.",
    ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    wallclock.configure(settings)
    # A black-holed database (TCP acknowledged, the server silent) would otherwise block the
    # worker until the fault ends: no iteration, no /healthz beat, no SIGTERM. Every wait for
    # the server is bounded instead, past the statement timeout so that one fires first.
    deadline.install(db_wait_budget_s(settings))
    metrics = make_metrics()
    # Liveness tolerates the longest legitimate pause: a full backoff plus a confirm wait.
    health = Health(stall_after_s=max(60.0, 3 * settings.backoff_max_s))
    server = (
        serve(settings.metrics_port, metrics.registry, health, settings.metrics_host)
        if settings.metrics_port
        else None
    )
    worker = make_worker(settings, metrics)
    runner = Runner(
        worker,
        idle_s=idle_s(settings),
        backoff=Backoff(0.1, settings.backoff_max_s),
        beat=health.beat,
    )
    runner.install_signal_handlers()
    log.info(
        "worker started",
        extra={
            "worker": name,
            "metrics_port": settings.metrics_port,
            "namespace": settings.amqp_namespace,
        },
    )
    try:
        return runner.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        log.info("worker stopped", extra={"worker": name, "iterations": runner.iterations})


def db_wait_budget_s(settings: Settings) -> float:
    """Longest wait for one database answer: the workers' statement timeout plus a margin."""
    statement_ms = max(ROLE_TIMEOUTS[role](settings)[0] for role in ("relay", "consumer"))
    return statement_ms / 1000 + DB_WAIT_MARGIN_S
