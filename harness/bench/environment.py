"""The machine and software a benchmark ran on (docs/performance.md, Method point 5)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from harness.stack.postgres import pg_bindir

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gunicorn", "flask", "psycopg2-binary", "pika", "orjson", "jsonschema-rs",
            "prometheus-flask-exporter", "pytest-benchmark")  # fmt: skip


def _run(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603 - fixed version probes
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (result.stdout or result.stderr).strip()


def _lscpu() -> dict[str, str]:
    fields = {}
    for line in _run(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _meminfo_gib() -> float | None:
    text = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return round(int(match[1]) / 2**20, 1) if match else None


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _dpkg(name: str) -> str | None:
    return _run(["dpkg-query", "-W", "-f", "${Version}", name]) or None


def describe() -> dict[str, Any]:
    """nproc, CPU model and MHz, memory, kernel, load, versions and the git commit."""
    cpu = _lscpu()
    bindir = pg_bindir()
    wrk = _run(["wrk", "-v"]).splitlines()
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu.get("Model name"),
        "cpu_mhz": cpu.get("CPU MHz") or cpu.get("CPU max MHz"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "packages": {name: _package(name) for name in PACKAGES},
        "postgres": _run([str(bindir / "postgres"), "--version"]) if bindir else None,
        "rabbitmq_server": _dpkg("rabbitmq-server"),
        "erlang": _dpkg("erlang-base"),
        "wrk": wrk[0] if wrk else None,
        "git_sha": sha or None,
        "git_dirty": dirty,
    }
