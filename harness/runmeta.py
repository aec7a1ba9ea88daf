"""Run metadata for every results directory: command, commit, versions, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "reco-harness",
    "flask",
    "gunicorn",
    "psycopg2-binary",
    "pika",
    "locust",
    "schemathesis",
    "prometheus-flask-exporter",
)


# Files every run directory holds one of (load, chaos and bench runs).
RUN_FILES = ("run.json", "audit.json", "summary.json", "verdict.json")


def runs_below(root: Path) -> str:
    """Name the run directories just below ``root`` (for a gate or report pointed at it), or ""."""
    if not root.is_dir():
        return ""
    below = sorted(
        p.name for p in root.iterdir() if p.is_dir() and any((p / n).is_file() for n in RUN_FILES)
    )
    return f"; run directories below it: {', '.join(below)}" if below else ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def collect() -> dict[str, Any]:
    """Describe this run's code and machine."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "command": sys.argv,
        "git_commit": commit,
        "versions": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            **{name: _version(name) for name in PACKAGES},
        },
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "hostname": platform.node()},
    }
