"""Fault actions on the stack, each with a guaranteed, idempotent rollback.

A fault is described by a plain dict (the experiment file's `[[method]]` entry, completed with
what rollback needs: URLs, pids, names), so the ledger can undo it from any process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from chaos.faultproxy.client import Client, NotFound, ToxiproxyError
from harness.stack import Stack
from harness.stack.identity import environment
from harness.stack.postgres import set_synchronous_standby, synchronous_standby
from harness.stack.procs import pid_alive
from service.wallclock import read_offset, write_offset

TOXICS = (
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "noop",
)
PROCESS_TARGETS = ("api_worker", "api_master", "relay", "consumer", "postgres", "rabbitmq")
PROCESS_MODES = ("kill", "pause", "term")
# Apps whose wall clock a clock step moves: the API (events ahead of its clock, queue time),
# the consumer (dead-letter stamps, event age) and the relay, whose decisions are all on
# database time: skewed too, so any host-clock decision it gained would be exercised.
CLOCK_APPS = ("api", "relay", "consumer")
CLOCK_ENV = ("RECO_ENV", "RECO_UNSAFE_TEST_FAULTS", "RECO_TEST_CLOCK_FILE")


class FaultError(RuntimeError):
    """A fault could not be applied or rolled back."""


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        out.append(current)
        stack += _children(current)
    return out


class Faults:
    """Apply and roll back faults on one stack."""

    def __init__(self, stack: Stack, namespace: str = "reco"):
        self.stack = stack
        self.namespace = namespace

    # -- preparation: complete a spec with everything rollback needs -----------------------
    def prepare(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Validate a method entry and resolve targets (pids, URLs) into a rollback-ready dict."""
        fault = dict(spec)
        action = fault.get("action")
        fault["state_dir"] = str(self.stack.state_dir)
        if action in ("toxic", "down"):
            links = self.stack.state.get("components", {}).get("toxiproxy", {}).get("links", {})
            if fault.get("link") not in links:
                raise FaultError(f"unknown link {fault.get('link')!r}; known: {sorted(links)}")
            fault["toxiproxy_url"] = self.stack.toxiproxy_url
            if action == "toxic":
                if fault.get("type") not in TOXICS:
                    raise FaultError(f"unknown toxic type {fault.get('type')!r}")
                fault.setdefault("name", f"chaos_{fault['type']}_{uuid.uuid4().hex[:6]}")
        elif action == "process":
            if fault.get("target") not in PROCESS_TARGETS:
                raise FaultError(f"unknown target {fault.get('target')!r}")
            if fault.get("mode") not in PROCESS_MODES:
                raise FaultError(f"unknown mode {fault.get('mode')!r}")
            fault["pids"] = self._pids(fault["target"])
        elif action in ("unbind", "poison", "alarm"):
            fault["amqp_url"] = self.stack.amqp_url()
            fault["namespace"] = self.namespace
        elif action == "lock":
            fault["database_url"] = self.stack.database_url()
            fault.setdefault("name", f"lock_{uuid.uuid4().hex[:8]}")
            if fault.get("table") not in ("item_popularity", "outbox"):
                raise FaultError("lock table must be item_popularity or outbox")
        elif action in ("migrate", "stall_commits"):
            fault["database_url"] = self.stack.database_url()
        elif action == "clock":
            fault["clock_file"] = str(clock_file(self.stack))
            components = self.stack.state.get("components", {})
            fault["pids"] = {n: components[n]["pid"] for n in CLOCK_APPS if n in components}
        else:
            raise FaultError(f"unknown action {action!r}")
        return fault

    def _pids(self, target: str) -> list[int]:
        components = self.stack.state.get("components", {})
        if target in ("api_worker", "api_master"):
            master = components["api"]["pid"]
            if target == "api_master":
                return [master]
            workers = _children(master)
            if not workers:
                raise FaultError("no gunicorn worker found")
            return [workers[0]]
        if target == "postgres":
            pid = self.stack.postgres().pid
            return _tree(pid) if pid else []
        if target == "rabbitmq":
            pid = self.stack.rabbitmq().pid
            return _tree(pid) if pid else []
        return [components[target]["pid"]]

    # -- apply ---------------------------------------------------------------------------
    def apply(self, fault: dict[str, Any]) -> None:
        """Inject the fault."""
        getattr(self, f"_apply_{fault['action']}")(fault)

    def _apply_toxic(self, fault: dict[str, Any]) -> None:
        with Client(fault["toxiproxy_url"]) as client:
            client.add_toxic(
                fault["link"],
                fault["type"],
                stream=fault.get("stream", "downstream"),
                name=fault["name"],
                toxicity=float(fault.get("toxicity", 1.0)),
                **{k: int(v) for k, v in fault.get("attributes", {}).items()},
            )

    def _apply_down(self, fault: dict[str, Any]) -> None:
        with Client(fault["toxiproxy_url"]) as client:
            client.disable(fault["link"])

    def _apply_process(self, fault: dict[str, Any]) -> None:
        sig = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "term": signal.SIGTERM}
        for pid in fault["pids"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig[fault["mode"]])

    def _apply_unbind(self, fault: dict[str, Any]) -> None:
        with _channel(fault["amqp_url"]) as channel:
            ns = fault["namespace"]
            channel.queue_unbind(f"{ns}.features", f"{ns}.events", "interaction.#")

    def _apply_poison(self, fault: dict[str, Any]) -> None:
        import pika

        bodies = [
            b"not json",
            b'{"type":"interaction.recorded","version":99}',
            b'{"type":"unknown.event","version":1}',
            b"[]",
            b'{"type":"interaction.recorded","version":1,"event_id":"nope"}',
        ]
        with _channel(fault["amqp_url"]) as channel:
            channel.confirm_delivery()
            for i in range(int(fault.get("count", 1))):
                channel.basic_publish(
                    f"{fault['namespace']}.events",
                    "interaction.recorded.view",
                    bodies[i % len(bodies)],
                    pika.BasicProperties(
                        message_id=f"poison-{uuid.uuid4()}",
                        delivery_mode=2,
                        type="interaction.recorded",
                    ),
                    mandatory=True,
                )

    def _apply_alarm(self, fault: dict[str, Any]) -> None:
        _rabbitmqctl(self.stack, ["set_vm_memory_high_watermark", "0.000001"])

    def _apply_lock(self, fault: dict[str, Any]) -> None:
        holder = _LockHolder(fault["database_url"], fault["table"], int(fault.get("rows", 200)))
        holder.start()
        _LOCKS[fault["name"]] = holder

    def _apply_stall_commits(self, fault: dict[str, Any]) -> None:
        set_commit_stall(fault["database_url"], True)

    def _apply_clock(self, fault: dict[str, Any]) -> None:
        write_offset(Path(fault["clock_file"]), float(fault["offset"]))
        # An app started without the switch would keep its real clock: a step that reaches
        # nobody must read as a failed step, never as a skew the stack took in its stride.
        deaf = [
            name
            for name in CLOCK_APPS
            if not _reads_clock(fault["pids"].get(name), fault["clock_file"])
        ]
        if deaf:
            raise FaultError(f"{', '.join(deaf)} not running with the wall_clock_offset switch")

    def _apply_migrate(self, fault: dict[str, Any]) -> None:
        fault["result"] = concurrent_migrations(fault["database_url"], int(fault.get("runners", 2)))

    # -- rollback (idempotent; safe from any process) -------------------------------------
    def rollback(self, fault: dict[str, Any]) -> None:
        """Undo the fault; succeed if it is already undone."""
        getattr(self, f"_rollback_{fault['action']}")(fault)

    def _rollback_toxic(self, fault: dict[str, Any]) -> None:
        with Client(fault["toxiproxy_url"]) as client, contextlib.suppress(NotFound):
            client.remove_toxic(fault["link"], fault["name"])

    def _rollback_down(self, fault: dict[str, Any]) -> None:
        with Client(fault["toxiproxy_url"]) as client:
            client.enable(fault["link"])

    def _rollback_process(self, fault: dict[str, Any]) -> None:
        target, mode = fault["target"], fault["mode"]
        if mode == "pause":
            for pid in fault["pids"]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            return
        if target == "api_worker":
            return  # the gunicorn master replaces a dead worker by itself
        if mode == "term":
            # A graceful stop may still be draining: let it finish before starting anew.
            deadline = time.monotonic() + 40
            while any(pid_alive(p) for p in fault["pids"]) and time.monotonic() < deadline:
                time.sleep(0.1)
        restart_component(self.stack, "api" if target == "api_master" else target)

    def _rollback_unbind(self, fault: dict[str, Any]) -> None:
        with _channel(fault["amqp_url"]) as channel:
            ns = fault["namespace"]
            channel.queue_bind(f"{ns}.features", f"{ns}.events", "interaction.#")

    def _rollback_poison(self, fault: dict[str, Any]) -> None:
        """Poison messages are the point: they stay in the DLQ for the audit to count."""

    def _rollback_alarm(self, fault: dict[str, Any]) -> None:
        _rabbitmqctl(self.stack, ["set_vm_memory_high_watermark", "0.4"])

    def _rollback_lock(self, fault: dict[str, Any]) -> None:
        holder = _LOCKS.pop(fault.get("name", ""), None)
        if holder is not None:
            holder.release()
            return
        # From another process: end the holder's session by its application name.
        conn = psycopg2.connect(fault["database_url"], connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'reco-chaos-lock'"
            )
        conn.close()

    def _rollback_load(self, fault: dict[str, Any]) -> None:
        """Stop a load generator a dead runner left behind (its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(fault["pid"], signal.SIGKILL)

    def _rollback_stall_commits(self, fault: dict[str, Any]) -> None:
        set_commit_stall(fault["database_url"], False)

    def _rollback_clock(self, fault: dict[str, Any]) -> None:
        # Back to the real clock, unless a later clock step already holds: its heal resets it.
        path = Path(fault["clock_file"])
        if read_offset(path) == float(fault["offset"]):
            write_offset(path, 0.0)

    def _rollback_switches(self, fault: dict[str, Any]) -> None:
        """Restart the switched apps with their usual environment, the clock back at 0."""
        if fault.get("clock_file"):
            write_offset(Path(fault["clock_file"]), 0.0)
        for name in fault["apps"]:
            self.stack.set_app_env(name, None)
            self.stack.stop_app(name)
            self.stack.start_app(name)

    def _rollback_migrate(self, fault: dict[str, Any]) -> None:
        """Nothing to undo: the scratch database is dropped by the action itself."""


def _reads_clock(pid: int | None, path: str) -> bool:
    """Whether process ``pid`` was started with the clock switch on, reading ``path``."""
    env = environment(pid, CLOCK_ENV) if pid else None
    if env is None:
        return False
    switches = {s.strip() for s in env.get("RECO_UNSAFE_TEST_FAULTS", "").split(",")}
    on = env.get("RECO_ENV") == "test" and "wall_clock_offset" in switches
    return on and env.get("RECO_TEST_CLOCK_FILE") == path


def clock_file(stack: Stack) -> Path:
    """The file whose seconds offset the wall clock of apps run with the clock switch."""
    return stack.state_dir / "clock-offset"


def restart_component(stack: Stack, name: str) -> None:
    """Start a component again after a kill or stop (no-op when it is running and ready)."""
    if name == "postgres":
        stack.postgres().start()
    elif name == "rabbitmq":
        stack.rabbitmq().start()
    else:
        info = stack.state.get("components", {}).get(name, {})
        # A recorded pid may since belong to another process: only its identity says "ours".
        if stack.liveness(name, info) != "running":
            stack.start_app(name)


@contextlib.contextmanager
def _channel(amqp_url: str):
    import pika

    params = pika.URLParameters(amqp_url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    params.connection_attempts = 3
    params.retry_delay = 1
    conn = pika.BlockingConnection(params)
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _rabbitmqctl(stack: Stack, args: list[str]) -> None:
    result = stack.rabbitmq().ctl(*args)
    if result.returncode != 0:
        raise FaultError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()[:300]}")


class _LockHolder:
    """A session that holds row locks on hot rows until released (lock contention)."""

    def __init__(self, database_url: str, table: str, rows: int):
        self.database_url, self.table, self.rows = database_url, table, rows
        self._release = threading.Event()
        self._locked = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="chaos-lock", daemon=True)
        self.error: Exception | None = None

    def start(self) -> None:
        self._thread.start()
        if not self._locked.wait(10):
            raise FaultError(f"could not lock rows of {self.table}: {self.error}")

    def _hold(self) -> None:
        order = "score DESC" if self.table == "item_popularity" else "id"
        where = "" if self.table == "item_popularity" else "WHERE published_at IS NULL"
        try:
            conn = psycopg2.connect(
                self.database_url,
                connect_timeout=5,
                application_name="reco-chaos-lock",
                options="-c idle_in_transaction_session_timeout=0",
            )
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT 1 FROM {self.table} {where} ORDER BY {order} "  # noqa: S608
                    "LIMIT %s FOR UPDATE",
                    (self.rows,),
                )
                self._locked.set()
                self._release.wait(600)
            conn.rollback()
            conn.close()
        except psycopg2.Error as exc:
            self.error = exc
            self._locked.set()

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)


_LOCKS: dict[str, _LockHolder] = {}

# A synchronous standby that never connects: every commit that asks for synchronous
# replication (all of them, with synchronous_commit on) is durable locally and then waits,
# invisible to others and holding its locks, as during a storage or replication stall.
ABSENT_STANDBY = "reco_chaos_absent_standby"


def set_commit_stall(database_url: str, stalled: bool) -> None:
    """Make every durable commit wait (or stop that and release the waiting ones)."""
    set_synchronous_standby(database_url, ABSENT_STANDBY if stalled else None)


def commit_stall_active(database_url: str) -> bool:
    """Whether the server still names the absent standby (a stall left behind)."""
    return synchronous_standby(database_url) == ABSENT_STANDBY


def concurrent_migrations(database_url: str, runners: int = 2) -> dict[str, Any]:
    """Run ``runners`` migration processes at once against a fresh scratch database."""
    base, _, _ = database_url.rpartition("/")
    scratch = f"chaos_migrate_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{base}/postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{scratch}"')
        cmd = [sys.executable, "-m", "migrations", "up", "--database-url", f"{base}/{scratch}"]
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603 - our interpreter and the migration runner
            for _ in range(runners)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        applied = sum(out.count("applied ") for out, _ in outputs)
        conn = psycopg2.connect(f"{base}/{scratch}", connect_timeout=5)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT version) FROM schema_migrations")
            rows, distinct = cur.fetchone()
        conn.close()
        from migrations.files import discover

        expected = len(discover()[0])
        return {
            "exit_codes": [p.returncode for p in procs],
            "applied_lines": applied,
            "recorded": rows,
            "distinct": distinct,
            "expected": expected,
            "ok": all(p.returncode == 0 for p in procs) and applied == expected == rows == distinct,
        }
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        admin.close()


def wait_ready(probe: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``probe`` holds, or None if it never did within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if probe():
                return time.monotonic() - started
        time.sleep(0.2)
    return None


__all__ = ["FaultError", "Faults", "ToxiproxyError", "concurrent_migrations", "restart_component"]
