"""The local stack: private PostgreSQL and RabbitMQ plus the service and workers as processes."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness.stack import faults
from harness.stack.postgres import PostgresServer
from harness.stack.procs import (
    StackError,
    free_port,
    kill_group,
    pid_alive,
    spawn,
    stop_pid,
    tail,
    wait_until,
)
from harness.stack.rabbitmq import RabbitServer

STATE_FILE = "stack.json"
DB_NAME = "reco"
APP_PROCESSES = ("api", "relay", "consumer")


def default_state_dir() -> Path:
    """Where the stack keeps its files: RECO_HARNESS_DIR or ./.harness."""
    return Path(os.environ.get("RECO_HARNESS_DIR", ".harness")).resolve()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL
            return resp.status == 200
    except OSError:
        return False


class Stack:
    """Start, describe and stop every component; remember pids and ports in a state file."""

    def __init__(
        self, state_dir: Path | None = None, test_mode: bool = False, chaos: bool | None = None
    ):
        self.state_dir = Path(state_dir or default_state_dir())
        self.test_mode = test_mode
        self.state: dict[str, Any] = self._load()
        if chaos is not None:
            self.state["chaos"] = chaos

    @property
    def chaos(self) -> bool:
        """Whether every client→dependency link goes through a fault proxy."""
        return bool(self.state.get("chaos"))

    # -- state file -------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.state_path)

    def stale(self) -> list[str]:
        """Name recorded components whose process is gone (an unclean previous shutdown)."""
        gone = []
        for name, info in self.state.get("components", {}).items():
            if info.get("pid") and not pid_alive(info["pid"]):
                gone.append(name)
        return gone

    # -- servers -----------------------------------------------------------------------
    def postgres(self) -> PostgresServer:
        info = self.state.get("components", {}).get("postgres", {})
        return PostgresServer(self.state_dir, port=info.get("port"), test_mode=self.test_mode)

    def rabbitmq(self) -> RabbitServer:
        info = self.state.get("components", {}).get("rabbitmq", {})
        return RabbitServer(
            self.state_dir, info.get("port"), info.get("dist_port"), info.get("epmd_port")
        )

    def database_url(self) -> str:
        external = os.environ.get("RECO_DATABASE_URL")
        if external:
            return external
        return self.state["components"]["postgres"]["url"]

    def amqp_url(self) -> str:
        external = os.environ.get("RECO_AMQP_URL")
        if external:
            return external
        return self.state["components"]["rabbitmq"]["url"]

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for the service and workers: URLs of this stack, development mode."""
        env = dict(os.environ)
        env.update(
            RECO_DATABASE_URL=self.database_url(),
            RECO_AMQP_URL=self.amqp_url(),
            RECO_ENV=env.get("RECO_ENV", "development"),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra or {})
        return env

    # -- lifecycle -----------------------------------------------------------------------
    def up(self, apps: bool = True, log=print) -> dict[str, Any]:
        """Start whatever is not running yet, migrate, and record it; return the state."""
        gone = self.stale()
        if gone:
            log(f"stale state in {self.state_dir}: {', '.join(gone)} not running; restarting them")
            self._forget_dead_apps()
        self.state.setdefault("components", {})
        self.state["state_dir"] = str(self.state_dir)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = []
            if not os.environ.get("RECO_DATABASE_URL"):
                futures.append(pool.submit(self._start_postgres))
            if not os.environ.get("RECO_AMQP_URL"):
                futures.append(pool.submit(self._start_rabbitmq))
            for future in futures:
                future.result()
        self._save()
        log(f"dependencies ready in {time.monotonic() - started:.1f}s")
        from migrations.runner import ChecksumDrift, MigrationError
        from migrations.runner import up as migrate_up

        try:
            migrate_up(self.database_url(), log=lambda _msg: None)
        except MigrationError as exc:
            hint = (
                " (this local database was migrated by another checkout: start afresh with"
                " `reco-harness down --purge`)"
                if isinstance(exc, ChecksumDrift) and not os.environ.get("RECO_DATABASE_URL")
                else ""
            )
            raise StackError(f"migrations: {exc}{hint}") from exc
        if self.chaos:
            self._start_fault_proxies()
            self._save()
        if apps:
            for name in APP_PROCESSES:
                if self._app_available(name):
                    self._start_app(name)
                    self._save()
        return self.state

    def _start_postgres(self) -> None:
        server = self.postgres()
        server.start()
        url = server.create_database(DB_NAME)
        self.state["components"]["postgres"] = {
            "port": server.port,
            "pid": server.pid,
            "url": url,
            "log": str(server.log_path),
        }

    def _start_rabbitmq(self) -> None:
        server = self.rabbitmq()
        server.start()
        self.state["components"]["rabbitmq"] = {
            "port": server.port,
            "dist_port": server.dist_port,
            "epmd_port": server.epmd_port,
            "pid": server.pid,
            "pgid": server.pgid,
            "url": server.url,
            "nodename": server.nodename,
            "log": str(server.log_path),
        }

    def _start_fault_proxies(self) -> None:
        info = self.state["components"].get("toxiproxy")
        if not info or (info.get("pid") and not pid_alive(info["pid"])):
            info = faults.start_toxiproxy(self.state_dir)
        upstreams = {"postgres": self.database_url(), "rabbitmq": self.amqp_url()}
        info["links"] = faults.create_links(info["url"], upstreams)
        self.state["components"]["toxiproxy"] = info

    @property
    def toxiproxy_url(self) -> str | None:
        info = self.state.get("components", {}).get("toxiproxy")
        return info["url"] if info else None

    def _forget_dead_apps(self) -> None:
        components = self.state.get("components", {})
        for name in list(components):
            info = components[name]
            if name in APP_PROCESSES and not pid_alive(info.get("pid")):
                kill_group(info.get("pgid"))
                del components[name]

    @staticmethod
    def _app_available(name: str) -> bool:
        module = {"api": "service.wsgi", "relay": "workers.relay", "consumer": "workers.consumer"}
        try:
            return importlib.util.find_spec(module[name]) is not None
        except ModuleNotFoundError:
            return False

    def app_argv(self, name: str, port: int) -> list[str]:
        """The command line of one application process."""
        if name == "api":
            conf = Path(__file__).resolve().parents[2] / "service" / "gunicorn.conf.py"
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

    def set_app_env(self, name: str, env: dict[str, str] | None) -> None:
        """Extra environment for one application process on its next start (None clears it)."""
        overrides = self.state.setdefault("app_env", {})
        if env:
            overrides[name] = dict(env)
        else:
            overrides.pop(name, None)
        self._save()

    def start_app(self, name: str) -> None:
        """Start (or restart) one application process: api, relay or consumer."""
        self._start_app(name)
        self._save()

    def stop_app(self, name: str, timeout: float = 35) -> None:
        """Stop one application process gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        info = self.state.get("components", {}).get(name)
        if info:
            stop_pid(info.get("pid"), timeout=timeout)
            kill_group(info.get("pgid"))

    def _start_app(self, name: str) -> None:
        info = self.state["components"].get(name)
        if info and pid_alive(info.get("pid")):
            return
        if info:
            # Orphans of a killed master still hold its listening socket: end the group, and
            # come back on the same port so clients (load generators) keep their URL.
            kill_group(info.get("pgid"))
            wait_until(lambda: _port_free(info["port"]), 10, f"port {info['port']} to be freed")
        port = info["port"] if info else free_port()
        log_path = self.state_dir / f"{name}.log"
        extra = {"RECO_METRICS_PORT": str(port)}
        if self.chaos:
            links = self.state["components"]["toxiproxy"]["links"]
            urls = {"postgres": self.database_url(), "rabbitmq": self.amqp_url()}
            extra.update(faults.app_env(name, urls, links))
        extra.update(self.state.get("app_env", {}).get(name, {}))
        if name == "api":
            prom_dir = self.state_dir / "prometheus"
            shutil.rmtree(prom_dir, ignore_errors=True)
            prom_dir.mkdir(parents=True)
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
        proc = spawn(
            self.app_argv(name, port),
            log_path,
            env=self.child_env(extra),
            cwd=Path(__file__).resolve().parents[2],
        )
        url = f"http://127.0.0.1:{port}"
        probe_url = f"{url}/readyz" if name == "api" else f"{url}/healthz"

        def probe() -> bool:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
            return _http_ok(probe_url)

        wait_until(probe, 30, name, interval=0.1)
        self.state["components"][name] = {
            "pid": proc.pid,
            "pgid": proc.pid,
            "port": port,
            "url": url,
            "log": str(log_path),
        }

    def down(self, purge: bool = False, log=print) -> None:
        """Stop every component this stack started; with ``purge`` delete its files too."""
        components = self.state.get("components", {})
        # The API first (no new writes), then the relay, then the consumer: each stops after
        # the one that feeds it, as docs/operations.md prescribes.
        for name in APP_PROCESSES:
            info = components.get(name)
            if info:
                stop_pid(info.get("pid"), timeout=35)
                kill_group(info.get("pgid"))
                log(f"stopped {name}")
        toxiproxy = components.get("toxiproxy")
        if toxiproxy and toxiproxy.get("pid"):
            stop_pid(toxiproxy["pid"], timeout=10)
            kill_group(toxiproxy.get("pgid"))
            log("stopped toxiproxy")
        if "rabbitmq" in components:
            self.rabbitmq().stop()
            log("stopped rabbitmq")
        if "postgres" in components:
            self.postgres().stop()
            log("stopped postgres")
        self.state["components"] = {}
        self.state.pop("chaos", None)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        elif self.state_dir.exists():
            self._save()

    def status(self) -> list[dict[str, Any]]:
        """Describe each component: url, port, pid and whether it is running and ready."""
        rows = []
        components = self.state.get("components", {})
        if os.environ.get("RECO_DATABASE_URL"):
            rows.append({"name": "postgres", "url": "(external)", "state": "external"})
        if os.environ.get("RECO_AMQP_URL"):
            rows.append({"name": "rabbitmq", "url": "(external)", "state": "external"})
        for name in ("postgres", "rabbitmq", "toxiproxy", *APP_PROCESSES):
            info = components.get(name)
            if not info:
                continue
            running = pid_alive(info.get("pid"))
            rows.append(
                {
                    "name": name,
                    "url": info.get("url"),
                    "port": info.get("port"),
                    "pid": info.get("pid"),
                    "log": info.get("log"),
                    "state": self._probe(name, info) if running else "stopped",
                }
            )
        return rows

    def _probe(self, name: str, info: dict[str, Any]) -> str:
        if name == "postgres":
            return "ready" if self.postgres().ready() else "running"
        if name == "rabbitmq":
            return "ready" if self.rabbitmq().ready() else "running"
        if name == "toxiproxy":
            return "ready" if _http_ok(f"{info['url']}/version") else "running"
        path = "/readyz" if name == "api" else "/healthz"
        return "ready" if _http_ok(f"{info['url']}{path}") else "running"
