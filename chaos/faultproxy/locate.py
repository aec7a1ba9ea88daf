"""Find a Toxiproxy to use: TOXIPROXY_URL, else toxiproxy-server on PATH, else start ours."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass
class Located:
    """How to reach a Toxiproxy, and how to stop it if we started it."""

    url: str
    kind: str  # "external" | "go-binary" | "faultproxy"
    process: subprocess.Popen | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server if we started it (SIGTERM, then SIGKILL), by its pid only."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a currently free TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_ready(url: str, timeout: float = 0.5) -> bool:
    """Tell whether GET /version answers 200."""
    try:
        return requests.get(f"{url}/version", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def start_server(
    argv: list[str],
    kind: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | os.PathLike | None = None,
    ready_timeout: float = READY_TIMEOUT,
    attempts: int = 3,
) -> Located:
    """Start a server binary with -host/-port on a free port and wait until /version answers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    last = "not started"
    for _ in range(attempts if port is None else 1):
        chosen = port or free_port(host)
        url = f"http://{host}:{chosen}"
        log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by Located
        out = log if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(  # noqa: S603 - the fault proxy binary found or built here
            [*argv, "-host", host, "-port", str(chosen)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(ROOT),
        )
        located = Located(url, kind, proc, log)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if is_ready(url):
                return located
            time.sleep(0.05)
        last = f"exit code {proc.poll()}" if proc.poll() is not None else "no answer"
        located.stop()
    raise RuntimeError(f"{kind} server did not become ready on {host} ({last})")


def start_faultproxy(
    host: str = "127.0.0.1", port: int | None = None, log_path: str | None = None
) -> Located:
    """Start chaos.faultproxy as a subprocess on a free port."""
    argv = [sys.executable, "-m", "chaos.faultproxy"]
    return start_server(argv, "faultproxy", host, port, log_path)


def find_server(log_path: str | None = None) -> Located:
    """Return TOXIPROXY_URL if set, else a started toxiproxy-server from PATH, else ours."""
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        return Located(url.rstrip("/"), "external")
    binary = shutil.which("toxiproxy-server")
    if binary:
        with contextlib.suppress(RuntimeError):
            return start_server([binary], "go-binary", log_path=log_path)
    return start_faultproxy(log_path=log_path)
