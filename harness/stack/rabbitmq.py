"""A private, disposable RabbitMQ node: own node name, ports, epmd, data and log dirs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from harness.ports import free_port
from harness.stack.identity import vouched
from harness.stack.procs import (
    StackError,
    as_user,
    chown_tree,
    kill_group,
    spawn,
    spawned_group,
    start_on_free_ports,
    stop_marked,
    stop_process,
    tail,
    wait_until,
)

RMQ_USER = "rabbitmq"
RMQ_BIN = Path("/usr/lib/rabbitmq/bin")
CONFIG = """\
listeners.tcp.default = 127.0.0.1:{port}
# Erlang distribution (inter-node and CLI traffic) listens on every address unless pinned.
distribution.listener.interface = 127.0.0.1
loopback_users.guest = true
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.4
# Quorum queues keep every entry of the Raft WAL in memory until the WAL rolls over at this
# size (default 512 MiB): a long run would see the node's memory climb for hours. 64 MiB
# bounds it to a visible sawtooth on a small host.
raft.wal_max_size_bytes = 67108864
log.console = false
log.file.level = info
"""
PORT_CLASH = ("dist_port_already_used", "eaddrinuse")  # a boot failed on a taken port
BOOT_FAILED = b"Kernel pid terminated"
SCHEDULERS_ENV = "RECO_HARNESS_RABBITMQ_SCHEDULERS"


def scheduler_count() -> int:
    """Erlang schedulers for the local node: RECO_HARNESS_RABBITMQ_SCHEDULERS, else half the cores.

    The node shares its host with PostgreSQL, the API and the workers. On 2 cores, one
    scheduler instead of two roughly halved the pipeline's end-to-end p99 at 3,000 events/s
    and did not lower the publish rate (docs/performance.md).
    """
    configured = os.environ.get(SCHEDULERS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise StackError(f"{SCHEDULERS_ENV} must be a whole number >= 1, got {configured!r}")
        return int(configured)
    return max(1, len(os.sched_getaffinity(0)) // 2)


def rabbitmq_server_path() -> Path | None:
    """Find the rabbitmq-server start script."""
    candidate = RMQ_BIN / "rabbitmq-server"
    if candidate.exists():
        return candidate
    found = shutil.which("rabbitmq-server")
    return Path(found) if found else None


class RabbitServer:
    """Start, stop, pause and probe one private RabbitMQ node."""

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
    ):
        self.state_dir = Path(state_dir)
        self.base = self.state_dir / "rabbitmq"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.epmd_port = epmd_port or free_port()
        self.own_ports = not (port or dist_port or epmd_port)
        self.host = "127.0.0.1"
        self.nodename = f"reco{self.port}@localhost"
        self.log_path = self.base / "log" / "startup.log"
        self.pgid: int | None = None
        self.schedulers: int | None = None  # chosen when the node is started (env())

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbitmq.pid"

    @property
    def pid(self) -> int | None:
        """The pid rabbitmq.pid names (maybe stale: see ``running``)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def marker(self) -> tuple[str, str]:
        """The environment entry every process of this node inherits (its node name)."""
        return ("RABBITMQ_NODENAME", self.nodename)

    def running(self) -> bool:
        """Tell whether rabbitmq.pid names a live Erlang VM of this node."""
        return vouched(self.pid, *self.marker) is not None

    def env(self) -> dict[str, str]:
        """Environment that keeps every file and port of the node private."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        self.schedulers = scheduler_count()
        env.update(
            HOME=str(self.base),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.base / "feature_flags"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=f"+S {self.schedulers}:{self.schedulers}",
        )
        return env

    def _prepare(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # noqa: S103 - service users traverse it
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(CONFIG.format(port=self.port))
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        chown_tree(self.base, RMQ_USER)

    def start(self, timeout: float = 40) -> None:
        """Start the node and wait until it accepts an AMQP connection."""
        start_on_free_ports(
            lambda: self._start_once(timeout),
            PORT_CLASH,
            self._reroll_ports if self.own_ports else None,
            "RabbitMQ",
        )

    def _reroll_ports(self) -> None:
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.nodename = f"reco{self.port}@localhost"

    def _start_once(self, timeout: float) -> None:
        script = rabbitmq_server_path()
        if script is None:
            raise StackError("rabbitmq-server not installed; run `reco-harness doctor`")
        if self.running() and self.ready():
            return
        self._prepare()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = spawn(
            as_user(RMQ_USER) + [str(script)], self.log_path, env=self.env(), cwd=self.base
        )
        self.pgid = proc.pid
        try:
            self._wait_booted(proc, offset, timeout)
        except BaseException:
            self.stop(timeout=10)  # the failed node, its epmd and leftovers
            raise

    def _wait_booted(self, proc: subprocess.Popen, offset: int, timeout: float) -> None:
        """Wait until the node accepts AMQP; fail at once when its boot visibly failed."""

        def probe() -> bool:
            if proc.poll() is not None:
                raise StackError(f"rabbitmq-server exited with {proc.returncode}")
            if _boot_failed(self.log_path, offset):
                # The VM reports a failed boot, then lingers writing a crash dump.
                raise StackError("RabbitMQ failed to boot")
            return self.ready()

        try:
            wait_until(probe, timeout, "RabbitMQ", interval=0.25)
        except StackError as exc:
            raise StackError(f"{exc}\n{tail(self.log_path)}") from None

    def ready(self) -> bool:
        """Tell whether an AMQP connection opens."""
        import pika

        params = pika.URLParameters(
            f"{self.url}?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2"
            "&stack_timeout=3"
        )
        pika_log = logging.getLogger("pika")
        level = pika_log.level
        pika_log.setLevel(logging.CRITICAL)  # refused connections are expected while booting
        try:
            conn = pika.BlockingConnection(params)
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        finally:
            pika_log.setLevel(level)
        conn.close()
        return True

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run rabbitmqctl against this node (as the rabbitmq user when we are root)."""
        argv = [str(RMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", RMQ_USER, "--", *argv]
        return subprocess.run(  # noqa: S603 - our own node and arguments
            argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self, timeout: float = 30) -> None:
        """Stop the node gracefully (SIGTERM), then whatever else carries its marker.

        rabbitmq.pid may be stale: its pid is signalled only when that process carries this
        node's name in its environment, as every process of the node does.
        """
        pid = self.pid
        ident = vouched(pid, *self.marker)
        # A node another object (or process) started: its group is the one spawn() made.
        pgid = self.pgid or (spawned_group(pid) if ident else None)
        stop_process(pid, ident, timeout=timeout)
        kill_group(pgid, self.marker)
        # epmd and inet_gethost detach into their own sessions; find them by our node's marker.
        stop_marked(*self.marker, timeout=5)

    def destroy(self) -> None:
        """Stop and delete the node's files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _boot_failed(log_path: Path, offset: int) -> bool:
    """Tell whether the Erlang VM logged a fatal boot error after ``offset``."""
    try:
        with open(log_path, "rb") as stream:
            stream.seek(offset)
            return BOOT_FAILED in stream.read()
    except OSError:
        return False
