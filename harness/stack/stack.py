"""The local stack: private PostgreSQL and RabbitMQ plus the service and workers as processes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from harness.ports import free_port
from harness.stack import faults
from harness.stack.apps import (
    APP_PORT_CLASH,
    APP_PROCESSES,
    PROCESS_MARKER,
    REPO_ROOT,
    app_argv,
    app_available,
    http_ok,
    port_free,
    readiness_url,
    spawned_liveness,
    unverified_note,
)
from harness.stack.identity import environment, identity
from harness.stack.postgres import PostgresServer
from harness.stack.procs import (
    StackError,
    kill_group,
    spawn,
    start_on_free_ports,
    stop_process,
    stopped_on_failure,
    tail,
    wait_until,
)
from harness.stack.rabbitmq import RabbitServer

DEPENDENCY_ENV = ("RECO_DATABASE_URL", "RECO_AMQP_URL")  # where an app finds its dependencies
STATE_FILE = "stack.json"
DB_NAME = "reco"
APP_READY_TIMEOUT = 30.0  # seconds for an app to answer its readiness probe


def default_state_dir() -> Path:
    """Where the stack keeps its files: RECO_HARNESS_DIR or ./.harness."""
    return Path(os.environ.get("RECO_HARNESS_DIR", ".harness")).resolve()


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
        """Name recorded components not running as recorded (an unclean previous shutdown)."""
        gone = []
        for name, info in self.state.get("components", {}).items():
            if info.get("pid") and self.liveness(name, info) != "running":
                gone.append(name)
        return gone

    def liveness(self, name: str, info: dict[str, Any]) -> str:
        """Judge a component's record: "running" (as recorded), "gone" or "unverified"."""
        if name == "postgres":
            return self.postgres().liveness()
        if name == "rabbitmq":
            return "running" if self.rabbitmq().running() else "gone"
        return spawned_liveness(info)

    def unverified(self, name: str, info: dict[str, Any]) -> str:
        """Say that a live pid recorded without an identity is left alone, and what to do."""
        return unverified_note(name, self.postgres().pid if name == "postgres" else info["pid"])

    def marker(self, name: str) -> tuple[str, str]:
        """The environment entry that marks the processes of one component."""
        return (PROCESS_MARKER, f"{self.state_dir}#{name}")

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

    def app_url(self, name: str) -> str | None:
        """Where app ``name`` answers (the API, or a worker's metrics), None when not recorded."""
        return self.state.get("components", {}).get(name, {}).get("url")

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
        try:
            self._up(apps, log)
        finally:
            # Whatever did start is on record, even when a later step failed or was interrupted.
            self._save()
        return self.state

    def _up(self, apps: bool, log) -> None:
        gone = self.stale()
        if gone:
            log(f"stale state in {self.state_dir}: {', '.join(gone)} not running; restarting them")
            self._forget_dead_apps(log)
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
        import psycopg2

        from migrations.runner import ChecksumDrift, MigrationError
        from migrations.runner import up as migrate_up

        try:
            migrate_up(self.database_url(), log=lambda _msg: None)
        except psycopg2.OperationalError as exc:
            # The first contact with the database: a one-line usage error, not a traceback.
            source = "RECO_DATABASE_URL" if os.environ.get("RECO_DATABASE_URL") else "database"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StackError(f"{source} unreachable: {reason}") from exc
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
                if app_available(name):
                    self._rewire(name, log)
                    self._start_app(name)
                    self._save()

    def _rewire(self, name: str, log) -> None:
        """Stop a running app whose links are not this stack's (its restart then uses them).

        ``up --chaos`` on a stack running without fault proxies (or whose proxies moved) would
        otherwise leave the app on its old connections: faults would reach nothing.
        """
        problem = self.miswired(name)
        if problem:
            log(f"restarting {name}: {problem}")
            self.stop_app(name)

    def _start_postgres(self) -> None:
        server = self.postgres()
        try:
            server.start()
            server.create_database(DB_NAME)
        finally:
            # On record when anything runs (start() stops what it started when it fails).
            if server.liveness() == "running":
                self.state["components"]["postgres"] = {
                    "port": server.port,
                    "pid": server.pid,
                    "url": server.url(DB_NAME),
                    "log": str(server.log_path),
                }

    def _start_rabbitmq(self) -> None:
        server = self.rabbitmq()
        try:
            server.start()
        finally:
            if server.running():
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
        if not info or self.fault_proxy_gone():
            if info:
                kill_group(info.get("pgid"), self.marker("toxiproxy"))
            info = faults.start_toxiproxy(self.state_dir, self.marker("toxiproxy"))
        upstreams = {"postgres": self.database_url(), "rabbitmq": self.amqp_url()}
        info["links"] = faults.create_links(info["url"], upstreams)
        self.state["components"]["toxiproxy"] = info

    def fault_proxy_gone(self) -> bool:
        """Whether the fault proxy this stack started has died (and every link with it)."""
        info = self.state.get("components", {}).get("toxiproxy")
        return bool(info and info.get("pid")) and self.liveness("toxiproxy", info) != "running"

    @property
    def toxiproxy_url(self) -> str | None:
        info = self.state.get("components", {}).get("toxiproxy")
        return info["url"] if info else None

    def _forget_dead_apps(self, log) -> None:
        components = self.state.get("components", {})
        for name in [n for n in APP_PROCESSES if n in components]:
            info = components[name]
            liveness = self.liveness(name, info)
            if liveness == "unverified":
                log(f"{self.unverified(name, info)}; starting a new {name}")
            elif liveness == "gone":
                kill_group(info.get("pgid"), self.marker(name))  # orphans of the dead leader
            else:
                continue
            del components[name]
            # A test switch outlives its app only when the run that set it died unfinished:
            # a fresh start must not break a guarantee on purpose.
            switches = self.state.get("app_env", {}).get(name, {}).get("RECO_UNSAFE_TEST_FAULTS")
            if switches:
                log(f"{name}: not restarting it with the test switches an unfinished run left"
                    f" ({switches})")  # fmt: skip
                self.state["app_env"].pop(name)

    def app_argv(self, name: str, port: int) -> list[str]:
        """The command line of one application process."""
        return app_argv(name, port)

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
            self._stop_recorded(name, info, timeout, log=lambda _line: None)

    def _stop_recorded(self, name: str, info: dict[str, Any], timeout: float, log) -> None:
        """Stop the process recorded for ``name`` if it is still that process, then its group."""
        if self.liveness(name, info) == "unverified":
            log(self.unverified(name, info))
        else:
            stop_process(info.get("pid"), info.get("identity"), timeout=timeout)
            log(f"stopped {name}")
        kill_group(info.get("pgid"), self.marker(name))

    def _start_app(self, name: str) -> None:
        info = self.state.setdefault("components", {}).get(name)
        liveness = self.liveness(name, info) if info else "gone"
        if liveness == "running":
            return
        if info and liveness == "unverified":
            raise StackError(self.unverified(name, info))
        if info:
            # Orphans of a killed master still hold its listening socket: end the group, and
            # come back on the same port so clients (load generators) keep their URL.
            kill_group(info.get("pgid"), self.marker(name))
            wait_until(lambda: port_free(info["port"]), 10, f"port {info['port']} to be freed")
            self._spawn_app(name, info["port"])
            return
        port = free_port()

        def reroll() -> None:
            nonlocal port
            port = free_port()

        # free_port() releases the port before the app binds it: another socket may take it.
        start_on_free_ports(lambda: self._spawn_app(name, port), APP_PORT_CLASH, reroll, name)

    def dependency_env(self, name: str) -> dict[str, str]:
        """The dependency URLs ``name`` gets: through its fault proxies on a chaos stack."""
        env = {"RECO_DATABASE_URL": self.database_url(), "RECO_AMQP_URL": self.amqp_url()}
        if self.chaos:
            links = self.state["components"].get("toxiproxy", {}).get("links", {})
            urls = {"postgres": env["RECO_DATABASE_URL"], "rabbitmq": env["RECO_AMQP_URL"]}
            env.update(faults.app_env(name, urls, links))
        overrides = self.state.get("app_env", {}).get(name, {})
        env.update({k: v for k, v in overrides.items() if k in DEPENDENCY_ENV})
        return env

    def miswired(self, name: str) -> str | None:
        """Say where a running app reaches a dependency other than this stack's link, else None.

        Read from the process's own environment (what it was started with), so a stack marked
        chaos whose apps kept their direct connections is caught, whatever the record says.
        """
        info = self.state.get("components", {}).get(name)
        if not info or self.liveness(name, info) != "running":
            return None
        actual = environment(info["pid"], DEPENDENCY_ENV)
        if actual is None:  # not readable here: what it was given when it started
            actual = info.get("reaches", {})
        wanted = self.dependency_env(name)
        for key in DEPENDENCY_ENV:
            got, want = faults.endpoint(actual.get(key)), faults.endpoint(wanted[key])
            if got != want:
                via = " (its fault proxy)" if self.chaos and faults.proxied(name, key) else ""
                return f"it reaches {key} at {got}, not at {want}{via}"
        return None

    def _spawn_app(self, name: str, port: int) -> None:
        """Start ``name`` on ``port``, record it at once, and wait until it is ready."""
        log_path = self.state_dir / f"{name}.log"
        extra = {"RECO_METRICS_PORT": str(port), PROCESS_MARKER: self.marker(name)[1]}
        extra.update(self.state.get("app_env", {}).get(name, {}))
        extra.update(self.dependency_env(name))
        if name == "api":
            prom_dir = self.state_dir / "prometheus"
            shutil.rmtree(prom_dir, ignore_errors=True)
            prom_dir.mkdir(parents=True)
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = spawn(
            self.app_argv(name, port),
            log_path,
            env=self.child_env(extra),
            cwd=REPO_ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        # On record before the wait: `down` can stop it even if this process dies meanwhile.
        self.state["components"][name] = {
            "pid": proc.pid,
            "pgid": proc.pid,
            "identity": identity(proc.pid),
            "port": port,
            "url": url,
            "log": str(log_path),
            # Where it reaches its dependencies (host:port, never credentials): `miswired`.
            "reaches": {k: faults.endpoint(extra[k]) for k in DEPENDENCY_ENV},
        }
        self._save()
        ready_url = readiness_url(name, url)

        def probe() -> bool:
            if proc.poll() is not None:
                output = tail(log_path, offset=offset)
                raise StackError(f"{name} exited with {proc.returncode}:\n{output}")
            return http_ok(ready_url)

        with stopped_on_failure(proc, self.marker(name)):
            wait_until(probe, APP_READY_TIMEOUT, name, interval=0.1)

    def running(self) -> set[str]:
        """The recorded components running now (what a command found before it started any)."""
        components = self.state.get("components", {})
        return {n for n, info in components.items() if self.liveness(n, info) == "running"}

    def down(self, purge: bool = False, log=print, keep: Collection[str] = ()) -> None:
        """Stop every component this stack started but ``keep``; ``purge`` deletes its files.

        ``keep`` names what ran before a command started the rest (``up --deps-only`` before
        `chaos run`): the command stops only what it started.
        """
        components = self.state.get("components", {})
        # The API first (no new writes), then the relay, then the consumer: each stops after
        # the one that feeds it, as docs/operations.md prescribes.
        for name in APP_PROCESSES:
            info = components.get(name)
            if info and name not in keep:
                self._stop_recorded(name, info, 35, log)
        toxiproxy = components.get("toxiproxy")
        if toxiproxy and toxiproxy.get("pid") and "toxiproxy" not in keep:
            self._stop_recorded("toxiproxy", toxiproxy, 10, log)
        if "rabbitmq" in components and "rabbitmq" not in keep:
            self.rabbitmq().stop()
            log("stopped rabbitmq")
        if "postgres" in components and "postgres" not in keep:
            if self.liveness("postgres", components["postgres"]) == "unverified":
                log(self.unverified("postgres", components["postgres"]))
            else:
                self.postgres().stop()
                log("stopped postgres")
        self.state["components"] = {n: info for n, info in components.items() if n in keep}
        # An app stopped here starts next time as configured: a run's overrides end with it.
        overrides = self.state.get("app_env", {})
        self.state["app_env"] = {n: env for n, env in overrides.items() if n in keep}
        if "toxiproxy" not in keep:
            self.state.pop("chaos", None)
        if purge and not keep:
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
            liveness = self.liveness(name, info)
            row = {
                "name": name,
                "url": info.get("url"),
                "port": info.get("port"),
                "pid": info.get("pid"),
                "log": info.get("log"),
                "state": self._probe(name, info) if liveness == "running" else "stopped",
            }
            if liveness == "unverified":
                row.update(state="unverified", note=self.unverified(name, info))
            rows.append(row)
        return rows

    def _probe(self, name: str, info: dict[str, Any]) -> str:
        if name == "postgres":
            return "ready" if self.postgres().ready() else "running"
        if name == "rabbitmq":
            return "ready" if self.rabbitmq().ready() else "running"
        if name == "toxiproxy":
            return "ready" if http_ok(f"{info['url']}/version") else "running"
        return "ready" if http_ok(readiness_url(name, info["url"])) else "running"
