"""`python -m service env-example` prints .env.example from the Settings definition."""

from __future__ import annotations

import sys

from service.settings import DEV_API_KEY, Settings

GUNICORN = """
# Gunicorn (service/gunicorn.conf.py)
RECO_GUNICORN_WORKER_CLASS=sync
RECO_GUNICORN_WORKERS=4
RECO_GUNICORN_THREADS=1
RECO_GUNICORN_MAX_REQUESTS=0
# Metrics of all gunicorn workers are aggregated through files here
PROMETHEUS_MULTIPROC_DIR=/tmp/reco-prom

# Harness
RECO_HARNESS_DIR=.harness
# TOXIPROXY_URL=http://127.0.0.1:8474
"""


def env_example() -> str:
    """Render every setting with its default and description."""
    lines = [
        "# Every setting the service and workers read (service/settings.py). Copy to .env.",
        "# Production (RECO_ENV=production) refuses default or missing secrets at start-up.",
        "# Regenerate with: python -m service env-example > .env.example",
        "",
    ]
    for name, default, doc in Settings.documented():
        if doc:
            lines.append(f"# {doc}")
        lines.append(f"{name}={f'dev:{DEV_API_KEY}' if name == 'RECO_API_KEYS' else default}")
    return "\n".join(lines) + "\n" + GUNICORN


if __name__ == "__main__":
    if sys.argv[1:] != ["env-example"]:
        sys.exit("usage: python -m service env-example")
    sys.stdout.write(env_example())
