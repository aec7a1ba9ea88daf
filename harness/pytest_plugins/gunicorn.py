"""Run the API under gunicorn as a real process for e2e tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.stack.procs import StackError, stop_pid, wait_until

ROOT = Path(__file__).resolve().parents[2]


class GunicornServer:
    """One gunicorn master with its workers, its log and metric files in one directory.

    Given a ``workdir`` (a test's ``tmp_path``), the files stay there for its owner;
    otherwise they go to a temporary directory that ``stop()`` removes.
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        app: str = "service.wsgi:app",
        workdir: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.owned_dir: Path | None = None
        if workdir is None:
            self.owned_dir = workdir = Path(tempfile.mkdtemp(prefix="reco-gunicorn-"))
        self.log_path = workdir / "gunicorn.log"
        self.prom_dir = str(workdir / "prometheus")
        os.makedirs(self.prom_dir, exist_ok=True)
        full_env = {
            **os.environ,
            **env,
            "PROMETHEUS_MULTIPROC_DIR": self.prom_dir,
            "RECO_GUNICORN_WORKERS": str(workers),
        }
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "service/gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{self.port}",
            app,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our interpreter running gunicorn
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=ROOT,
                start_new_session=True,
            )
        try:
            wait_until(self._alive, 30, "gunicorn")
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise StackError(f"gunicorn exited: {self.log()[-2000:]}")  # ends the wait
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310
                return resp.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            return [int(p) for p in children.read_text().split()]
        return []

    def terminate(self) -> int:
        """SIGTERM (graceful) and wait; return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=40)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)


@pytest.fixture
def gunicorn_server(rabbit_instance, tmp_path) -> Iterator[Callable[..., GunicornServer]]:
    """Start gunicorn serving service.wsgi:app against a given database URL.

    Logs and metric files go under the test's ``tmp_path``, which pytest keeps for the
    last few runs, so a failed test's server log can still be read.
    """
    started: list[GunicornServer] = []

    def start(database_url: str, workers: int = 2, **env: str) -> GunicornServer:
        server = GunicornServer(
            {
                "RECO_ENV": "test",
                "RECO_DATABASE_URL": database_url,
                "RECO_AMQP_URL": rabbit_instance.url,
                **env,
            },
            workers,
            workdir=tmp_path / f"gunicorn-{len(started)}",
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
