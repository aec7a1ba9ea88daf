"""The service and workers as processes: command lines, readiness, and what a record proves."""

from __future__ import annotations

import importlib.util
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from harness.stack.identity import is_ours
from harness.stack.procs import pid_alive

APP_PROCESSES = ("api", "relay", "consumer")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Every process the stack spawns carries PROCESS_MARKER=<state dir>#<component>, inherited by
# its children: a process group is only killed once a member of it shows the marker.
PROCESS_MARKER = "RECO_HARNESS_PROCESS"
# gunicorn's and http.server's words when the port an app was given is taken.
APP_PORT_CLASH = ("Connection in use", "Address already in use")
_MODULES = {"api": "service.wsgi", "relay": "workers.relay", "consumer": "workers.consumer"}


def app_available(name: str) -> bool:
    """Tell whether the code of one application process is installed."""
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except ModuleNotFoundError:
        return False


def app_argv(name: str, port: int) -> list[str]:
    """The command line of one application process."""
    if name == "api":
        conf = REPO_ROOT / "service" / "gunicorn.conf.py"
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(conf),
            "--bind",
            f"127.0.0.1:{port}",
            "service.wsgi:app",
        ]
    return [sys.executable, "-m", f"workers.{name}"]


def readiness_url(name: str, url: str) -> str:
    """Where one application process says it is ready."""
    return f"{url}/readyz" if name == "api" else f"{url}/healthz"


def port_free(port: int) -> bool:
    """Tell whether a server could bind ``port`` on loopback now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Tell whether a GET of ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL
            return resp.status == 200
    except OSError:
        return False


def spawned_liveness(info: dict[str, Any]) -> str:
    """Judge the record of a process the stack spawned: "running", "gone" or "unverified".

    A record without an identity (written before identities were kept) proves nothing about
    whatever process has its pid now: "unverified" when one does.
    """
    pid = info.get("pid")
    if "identity" in info:
        return "running" if is_ours(pid, info["identity"]) else "gone"
    return "unverified" if pid_alive(pid) else "gone"


def unverified_note(name: str, pid: int | None) -> str:
    """Say that a live pid recorded without an identity is left alone, and what to do."""
    return (
        f"{name}: pid {pid} was recorded without an identity (by an older reco-harness)"
        f" and is left alone; stop it yourself if it is still this stack's {name}"
    )
