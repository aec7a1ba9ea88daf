"""Print .env.example (``env-example``) or the settings table of docs/operations.md
(``settings-table``) from the Settings definition, so neither drifts from the code."""

from __future__ import annotations

import sys

from service.settings import DEV_API_KEY, Settings

GUNICORN = """
# Gunicorn (service/gunicorn.conf.py)
RECO_BIND=127.0.0.1:8000
RECO_GUNICORN_WORKER_CLASS=sync
RECO_GUNICORN_WORKERS=4
RECO_GUNICORN_THREADS=1
RECO_GUNICORN_MAX_REQUESTS=0
RECO_GUNICORN_BACKLOG=256
RECO_GUNICORN_LOGLEVEL=info
# gunicorn's runtime control socket (resize, reload, stop): off unless a path is given
# RECO_GUNICORN_CONTROL_SOCKET=
# Metrics of all gunicorn workers are aggregated through files in this directory. Unset: a
# temporary one the master makes and removes. A directory named here must exist and be
# emptied before each start (stale files would be counted again).
# PROMETHEUS_MULTIPROC_DIR=

# Harness
RECO_HARNESS_DIR=.harness
# Erlang schedulers of the local RabbitMQ node (default: half the cores, at least one)
# RECO_HARNESS_RABBITMQ_SCHEDULERS=1
# TOXIPROXY_URL=http://127.0.0.1:8474
"""


def env_example() -> str:
    """Render every setting with its default and description."""
    lines = [
        "# Every setting the service and workers read (service/settings.py), with its default.",
        "# Nothing loads this file: set the variables in each process's environment.",
        "# Production (RECO_ENV=production) refuses default or missing secrets at start-up.",
        "# Regenerate with: python -m service env-example > .env.example",
        "",
    ]
    for name, default, doc in Settings.documented():
        if doc:
            lines.append(f"# {doc}")
        lines.append(f"{name}={f'dev:{DEV_API_KEY}' if name == 'RECO_API_KEYS' else default}")
    return "\n".join(lines) + "\n" + GUNICORN


def settings_table() -> str:
    """Every setting as a Markdown table row: variable, default, meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, doc in Settings.documented():
        shown = f"dev:{DEV_API_KEY}" if name == "RECO_API_KEYS" else default
        lines.append(f"| `{name}` | {f'`{shown}`' if shown != '' else '(empty)'} | {doc} |")
    return "\n".join(lines) + "\n"


COMMANDS = {"env-example": env_example, "settings-table": settings_table}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m service {{{'|'.join(COMMANDS)}}}")
    sys.stdout.write(COMMANDS[sys.argv[1]]())
