"""PostgreSQL baselines: B0 fsyncs per second (pg_test_fsync), B3 pgbench select-only TPS."""

from __future__ import annotations

import re
import resource
import subprocess
import threading
from pathlib import Path
from typing import Any

from harness.bench import cpu
from harness.stack import PostgresServer
from harness.stack.postgres import pg_bindir

_OPS = re.compile(r"^\s+(\S+)\s+([\d.]+) ops/sec")
_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"latency average = ([\d.]+) ms")


def _tool(name: str) -> str:
    bindir = pg_bindir()
    if bindir is None or not (bindir / name).exists():
        raise RuntimeError(f"{name} not found (Debian: apt-get install postgresql)")
    return str(bindir / name)


def fsync_rate(directory: Path, seconds: int = 2, timeout: float = 60) -> dict[str, Any]:
    """B0: ops/s of each sync method for one 8 kB write, on the filesystem of ``directory``.

    Only the tool's first section is needed (a WAL commit is one write plus fdatasync, Linux's
    default ``wal_sync_method``), so the tool is stopped once that section is complete.
    """
    argv = [_tool("pg_test_fsync"), "-s", str(seconds), "-f", str(directory / "fsync.test")]
    methods: dict[str, float] = {}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # noqa: S603 - pg_test_fsync from the server's bin dir
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        section = 0
        for line in proc.stdout:
            if line.startswith("Compare file sync methods"):
                section += 1
                if section == 2:
                    break
            match = _OPS.match(line)
            if section == 1 and match:
                methods[match[1]] = float(match[2])
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=10)
        (directory / "fsync.test").unlink(missing_ok=True)
    if "fdatasync" not in methods:
        raise RuntimeError(f"pg_test_fsync gave no fdatasync rate: {methods}")
    return {"fsync_per_s": methods["fdatasync"], "methods_one_8k_write": methods}


def pgbench_init(pg: PostgresServer, dbname: str, scale: int) -> None:
    """Create and fill the pgbench tables (``pgbench -i -s scale``)."""
    pg.create_database(dbname)
    argv = [_tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1"]
    argv += ["-p", str(pg.port), "-U", "postgres", dbname]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603 - pgbench from the server's bin dir
    if result.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {result.stderr.strip()[-500:]}")


def pgbench_select(
    pg: PostgresServer,
    dbname: str,
    seconds: float,
    unix_socket: bool = True,
    clients: int = 8,
    threads: int = 2,
) -> dict[str, Any]:
    """B3: ``pgbench -S -M prepared -c 8 -j 2 -T N``; TPS and CPU per 1k transactions."""
    host = str(pg.socket_dir) if unix_socket else "127.0.0.1"
    argv = [_tool("pgbench"), "-S", "-M", "prepared", "-c", str(clients), "-j", str(threads)]
    argv += ["-T", str(max(1, round(seconds))), "-h", host, "-p", str(pg.port)]
    argv += ["-U", "postgres", "-n", dbname]
    pg_before = cpu.cumulative_seconds(pg.pid) if pg.pid else 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603 - pgbench from the server's bin dir
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg_used = (cpu.cumulative_seconds(pg.pid) if pg.pid else 0.0) - pg_before
    tps = _TPS.search(result.stdout)
    if result.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed: {(result.stderr or result.stdout).strip()[-500:]}")
    rate = float(tps[1])
    transactions = rate * max(1, round(seconds))
    client_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    latency = _LATENCY.search(result.stdout)
    return {
        "tps": round(rate, 1),
        "latency_ms": float(latency[1]) if latency else None,
        "connection": "unix socket" if unix_socket else "tcp 127.0.0.1",
        "cpu_s_per_1k": {
            "pgbench": round(1000 * client_cpu / transactions, 4),
            "postgres": round(1000 * pg_used / transactions, 4),
        },
    }
