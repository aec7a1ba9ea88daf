"""Run metadata for every results directory: command, commit, versions, machine."""

from __future__ import annotations

import os
import platform
import re
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


# Options whose value is a credential, and the password in a URL's user information.
SECRET_OPTION = re.compile(r"^--?[\w-]*(api[-_]?key|password|passwd|secret|token)[\w-]*$", re.I)
URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]+@")
REDACTED = "***"


LOCUST_ARG = "--locust-arg"  # load run's option carrying one Locust argument


def redact(argv: list[str]) -> list[str]:
    """A command line fit to store: credential values and URL passwords replaced by ***."""
    out: list[str] = []
    hide_next = False  # the previous argument (perhaps passed through) was a credential option
    for arg in argv:
        if arg == LOCUST_ARG:
            out.append(arg)  # the next argument is Locust's: judged as if it stood alone
            continue
        prefix = ""
        if arg.startswith(LOCUST_ARG + "="):
            prefix, arg = LOCUST_ARG + "=", arg[len(LOCUST_ARG) + 1 :]
        if hide_next:
            out.append(prefix + REDACTED)
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if SECRET_OPTION.match(name):
            if eq:
                arg = f"{name}={REDACTED}"
            else:
                hide_next = True
        out.append(prefix + URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", arg))
    return out


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
            subprocess.run(  # noqa: S603 - git from PATH, fixed arguments
                ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
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
        "command": redact(sys.argv),
        "git_commit": commit,
        "versions": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            **{name: _version(name) for name in PACKAGES},
        },
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "hostname": platform.node()},
    }
