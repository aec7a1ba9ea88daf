"""A private, disposable PostgreSQL server: own data dir, own port, own socket dir."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg2

from harness.ports import free_port
from harness.stack.identity import identity, is_ours
from harness.stack.procs import (
    StackError,
    as_user,
    chown_tree,
    pid_alive,
    start_on_free_ports,
    stop_process,
    tail,
    wait_until,
)

PG_USER = "postgres"
PORT_CLASH = ("could not bind",)  # the postmaster's words when its port is taken


def pg_bindir() -> Path | None:
    """Find the PostgreSQL server binaries (initdb, pg_ctl), newest version first."""
    for pattern in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(pattern, "initdb").exists():
            return Path(pattern)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """Start, stop, pause and probe one private PostgreSQL cluster."""

    def __init__(self, state_dir: Path, port: int | None = None, test_mode: bool = False):
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / "pgdata"
        self.socket_dir = self.state_dir / "pgsock"
        self.log_path = self.state_dir / "postgres.log"
        self.port = port or free_port()
        self.own_port = port is None
        self.test_mode = test_mode
        self.host = "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The pid postmaster.pid names (maybe stale: see ``liveness``)."""
        text = self._lock_file()
        try:
            return int(text.split()[0]) if text else None
        except (ValueError, IndexError):
            return None

    def _lock_file(self) -> str | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text()
        except OSError:
            return None

    @property
    def identity_path(self) -> Path:
        """Where the identity of the postmaster this class started is kept (pg_ctl detaches it)."""
        return self.state_dir / "postgres.identity"

    def _recorded(self) -> tuple[int, str] | None:
        try:
            pid, ident = self.identity_path.read_text().split()
            return int(pid), ident
        except (OSError, ValueError):
            return None

    def liveness(self) -> str:
        """Judge postmaster.pid: "running" (ours), "gone", or "unverified" (not vouched for)."""
        pid = self.pid
        if not pid_alive(pid):
            return "gone"
        recorded = self._recorded()
        if recorded is None or recorded[0] != pid:
            return "unverified"  # started before identities were kept, or not by this class
        return "running" if is_ours(pid, recorded[1]) else "gone"

    def _bin(self, name: str) -> str:
        bindir = pg_bindir()
        if bindir is None:
            raise StackError("PostgreSQL server binaries not found; run `reco-harness doctor`")
        return str(bindir / name)

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - PostgreSQL's own tools from its bin dir
            as_user(PG_USER) + argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )

    def init(self) -> None:
        """Create the cluster unless the data dir already holds one."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # noqa: S103 - service users traverse it
        self.data_dir.mkdir(exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        chown_tree(self.data_dir, PG_USER)
        chown_tree(self.socket_dir, PG_USER)
        os.chmod(self.data_dir, 0o700)
        result = self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it answers a query."""
        start_on_free_ports(
            lambda: self._start_once(timeout),
            PORT_CLASH,
            self._reroll_port if self.own_port else None,
            "PostgreSQL",
        )

    def _reroll_port(self) -> None:
        self.port = free_port()

    def _start_once(self, timeout: float) -> None:
        self.init()
        state = self.liveness()
        if state == "running" and self.ready():
            return
        if state == "unverified":
            # pg_ctl would only fail on the lock file: say what runs there and what to do.
            raise StackError(
                f"a PostgreSQL postmaster (pid {self.pid}) already runs on {self.data_dir}, "
                "started before this stack kept process identities (or by someone else); "
                f"stop it with `pg_ctl -D {self.data_dir} stop -m fast` and start again"
            )
        pid_before = self.pid
        try:
            self._pg_ctl_start(timeout)
        except BaseException:
            # pg_ctl may give up (or be interrupted) while the postmaster it forked lives on.
            if self.pid != pid_before:
                self._record_postmaster()
                self.stop(timeout=10)
            raise

    def _record_postmaster(self) -> None:
        pid = self.pid
        if pid:
            self.identity_path.write_text(f"{pid} {identity(pid)}\n")

    def _pg_ctl_start(self, timeout: float) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            "-c shared_buffers=256MB",
        ]
        if self.test_mode:
            # Durability off only for disposable test clusters; never for chaos durability runs.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self.log_path.touch()
        chown_tree(self.log_path, PG_USER)
        result = self._run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {result.stderr.strip()}\n{tail(self.log_path)}"
            )
        self._record_postmaster()
        wait_until(self.ready, timeout, "PostgreSQL")

    def ready(self) -> bool:
        """Tell whether a query succeeds."""
        try:
            conn = psycopg2.connect(self.url(), connect_timeout=2)
        except psycopg2.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally from a template) unless it exists; return its URL."""
        conn = psycopg2.connect(self.url(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    suffix = f' TEMPLATE "{template}"' if template else ""
                    cur.execute(f'CREATE DATABASE "{name}"{suffix}')
        finally:
            conn.close()
        return self.url(name)

    def stop(self, timeout: float = 20) -> None:
        """Stop our postmaster with a fast shutdown, SIGKILL if that does not finish in time.

        Only the postmaster whose identity this class recorded is signalled: pg_ctl would
        signal whatever process now has the pid of a stale postmaster.pid.
        """
        recorded = self._recorded()
        if recorded is not None:
            # SIGINT is PostgreSQL's fast shutdown, what `pg_ctl -m fast stop` sends.
            stop_process(recorded[0], recorded[1], timeout=timeout, sig=signal.SIGINT)

    def destroy(self) -> None:
        """Stop and delete the state dir."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def synchronous_standby(database_url: str) -> str:
    """The server's synchronous_standby_names, read in a new session."""
    conn = psycopg2.connect(database_url, connect_timeout=5, application_name="reco-harness")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_standby_names")
            return cur.fetchone()[0]
    finally:
        conn.close()


def set_synchronous_standby(database_url: str, name: str | None, timeout: float = 10) -> None:
    """Name a synchronous standby (None: none) and wait until new sessions see it.

    Naming one that never connects makes every commit that asks for synchronous replication
    wait after its WAL record is durable, holding its locks: a commit stall on demand.
    ALTER SYSTEM and pg_reload_conf() write no transaction, so they never wait themselves;
    the reload is asynchronous, hence the wait. Needs a superuser.
    """
    conn = psycopg2.connect(database_url, connect_timeout=5, application_name="reco-harness")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if name is None:
                cur.execute("ALTER SYSTEM RESET synchronous_standby_names")
            else:
                cur.execute("ALTER SYSTEM SET synchronous_standby_names = %s", (name,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    wanted = name or ""
    wait_until(
        lambda: synchronous_standby(database_url) == wanted,
        timeout,
        "PostgreSQL to reload synchronous_standby_names",
        interval=0.02,
    )
