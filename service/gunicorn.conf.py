"""Gunicorn settings for the reco API (see docs/operations.md for how they were chosen)."""

import os
import shutil
import sys
import tempfile

from service.settings import ConfigError, Settings


def _refuse(message: str) -> None:
    """Stop the master with one line naming the variable and exit 2, as the workers do."""
    print(f"configuration error: {message}", file=sys.stderr)
    # SystemExit is no Exception: gunicorn's config loader lets it through, traceback-free.
    sys.exit(2)


def _count(env: str, default: int, low: int) -> int:
    """An integer of at least ``low`` from ``env``; anything else stops the master."""
    raw = os.environ.get(env, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        _refuse(f"{env}: must be an integer of at least {low}, got {raw!r}")
    return value


# Checked once, here in the master: refused in a worker, a setting is a traceback per worker
# and gunicorn's exit 3 ("Worker failed to boot"), not the exit 2 docs/operations.md promises.
try:
    Settings.from_env()
except ConfigError as exc:
    _refuse(str(exc))

# Each worker handles one request at a time on its own connection pool; on 2 cores sync
# workers beat gthread because threads waking from I/O queue for the GIL (docs/performance.md).
# "sync" is gunicorn's sync worker with client socket timeouts (service/gunicorn_worker.py).
worker_class = os.environ.get("RECO_GUNICORN_WORKER_CLASS", "sync")
if worker_class == "sync":
    worker_class = "service.gunicorn_worker.TimedSyncWorker"
workers = _count("RECO_GUNICORN_WORKERS", 4, 1)
threads = _count("RECO_GUNICORN_THREADS", 1, 1)
bind = os.environ.get("RECO_BIND", "127.0.0.1:8000")
backlog = _count("RECO_GUNICORN_BACKLOG", 256, 1)
# A backstop only: request deadlines (0.8 s reads, 1.5 s writes) are 20x smaller.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Off by default so soak runs see leaks; set RECO_GUNICORN_MAX_REQUESTS to recycle workers.
max_requests = _count("RECO_GUNICORN_MAX_REQUESTS", 0, 0)
max_requests_jitter = max_requests // 10
limit_request_line = 4094
# 50 header fields from a client, plus the five the edge adds to every request it passes on
# (X-Request-ID, X-Request-Start, X-Forwarded-For, X-Forwarded-Proto, Connection).
limit_request_fields = 55
limit_request_field_size = 8190
# The API is served at / and no proxy in front of it sets SCRIPT_NAME or PATH_INFO. Gunicorn
# maps both headers into the environ when the peer is trusted (forwarded_allow_ips: loopback
# by default), so a local client's SCRIPT_NAME moved every route under it, or, when the path
# did not start with it, got a 500; now they are dropped like any header with an underscore.
forwarder_headers = ""
# The heartbeat file must live on tmpfs: a disk-backed fchmod can stall the arbiter.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
accesslog = None  # the app writes one JSON line per request
errorlog = "-"
loglevel = os.environ.get("RECO_GUNICORN_LOGLEVEL", "info")
proc_name = "reco-api"
# Gunicorn's runtime control socket (gunicornc: resize, reload, stop) is one fixed path per
# user by default, so every master on a host would bind the same file. Off unless asked for.
control_socket_disable = not os.environ.get("RECO_GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["RECO_GUNICORN_CONTROL_SOCKET"]

_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Metrics from all workers are aggregated through files in this directory.
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="reco-prom-"
    )


def on_exit(server):
    """Remove the metrics directory this config made (one named by the operator is kept)."""
    # After a USR2 upgrade the new master inherited the directory: leave it to that one.
    if _own_metrics_dir and not getattr(server, "reexec_pid", 0):
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the aggregated metrics."""
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def post_worker_init(worker):
    """Answer gunicorn's own errors as problem+json, like the app, and log no client input."""
    from service import gunicorn_errors

    gunicorn_errors.install()
