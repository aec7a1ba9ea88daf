# syntax=docker/dockerfile:1
# One image for the API (gunicorn), the relay, the consumer and the migration job; the compose
# file picks the command. Build: docker build -t reco:dev .
# Pin the base by digest in CI (python:3.11-slim-bookworm@sha256:...): a tag moves.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what production runs: the harness, chaos and load tooling stay out of the image.
COPY pyproject.toml setup.cfg README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# psycopg2-binary and orjson ship manylinux wheels, so no compiler or apt-get is needed.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile . \
 && rm -f /opt/venv/bin/reco-harness \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import service.wsgi, workers.relay, workers.consumer, migrations"

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" reco \
 && useradd --system --uid "${UID}" --gid reco --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin reco
COPY --from=build /opt/venv /opt/venv
COPY service/gunicorn.conf.py /etc/reco/gunicorn.conf.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECO_ENV=production \
    RECO_BIND=0.0.0.0:8000 \
    RECO_HEALTH_URL=http://127.0.0.1:8000/healthz
WORKDIR /tmp
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER ${UID}:${UID}
EXPOSE 8000
# Liveness of whatever runs here: the API's /healthz, or a worker's (compose sets
# RECO_HEALTH_URL to its metrics port). The slim image has no curl; Python is enough.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['RECO_HEALTH_URL'], timeout=2)"]
# Gunicorn's worker heartbeat files on tmpfs: on a read-only or slow disk the arbiter stalls.
CMD ["gunicorn", "-c", "/etc/reco/gunicorn.conf.py", "--worker-tmp-dir", "/dev/shm", "service.wsgi:app"]
