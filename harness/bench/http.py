"""Side-by-side HTTP benchmark: the service against bare Flask baselines, interleaved rounds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from harness.bench import cpu, wrk
from harness.bench.bare_app import setup_database
from harness.pytest_plugins.gunicorn import GunicornServer
from harness.stack import PostgresServer
from migrations.runner import up

# (name, baseline path, service path, lua for baseline, lua for service)
PAIRS = (
    ("reco_get_vs_db", "/db", "/v1/users/{user}/recommendations", None, wrk.GET_USERS_LUA),
    ("events_post_vs_write", "/write", "/v1/events", wrk.POST_EVENTS_LUA, wrk.POST_EVENTS_LUA),
)
TARGETS = {"reco_get_vs_db": 0.75, "events_post_vs_write": 0.6}


@dataclasses.dataclass
class Measurement:
    """One wrk run against one endpoint with the CPU its server burnt."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s_per_1k: float


def _measure(
    server: GunicornServer, path: str, lua: str | None, duration: float, connections: int
) -> Measurement:
    pids = cpu.tree(server.proc.pid)
    before = cpu.cpu_seconds(pids)
    result = wrk.run(server.url + path, duration, connections, lua)
    used = cpu.cpu_seconds(cpu.tree(server.proc.pid)) - before
    per_1k = used / result.requests * 1000 if result.requests else float("nan")
    return Measurement(result.rps, result.p50_ms, result.p99_ms, result.errors, per_1k)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(
    rounds: int = 3,
    duration: float = 5.0,
    connections: int = 16,
    worker_class: str | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run every pair for ``rounds`` interleaved rounds; return ratios with median/min/max."""
    if not wrk.available():
        raise RuntimeError("wrk not installed: apt-get install -y wrk")
    root = Path(tempfile.mkdtemp(prefix="reco-bench-http-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    pg = PostgresServer(root / "pg")
    servers: list[GunicornServer] = []
    try:
        pg.start()
        url = pg.create_database("reco")
        up(url, log=lambda _m: None)
        setup_database(url)
        env = {
            "RECO_DATABASE_URL": url,
            "RECO_ENV": "development",
            "RECO_LOG_LEVEL": "WARNING",
            "RECO_GUNICORN_LOGLEVEL": "warning",
        }
        if worker_class:
            env["RECO_GUNICORN_WORKER_CLASS"] = worker_class
            if worker_class == "gthread":
                env.update(RECO_GUNICORN_WORKERS="2", RECO_GUNICORN_THREADS="4")
        workers = int(env.get("RECO_GUNICORN_WORKERS", "4"))
        bare = GunicornServer(env, workers, app="harness.bench.bare_app:app")
        servers.append(bare)
        service = GunicornServer(env, workers)
        servers.append(service)
        steal_before = cpu.host_times()
        raw: dict[str, dict[str, list[Measurement]]] = {}
        for _ in range(rounds):
            hello = _measure(bare, "/hello", None, duration, connections)
            raw.setdefault("hello", {}).setdefault("baseline", []).append(hello)
            for name, base_path, svc_path, base_lua, svc_lua in PAIRS:
                entry = raw.setdefault(name, {})
                entry.setdefault("baseline", []).append(
                    _measure(bare, base_path, base_lua, duration, connections)
                )
                entry.setdefault("service", []).append(
                    _measure(service, svc_path, svc_lua, duration, connections)
                )
        steal = cpu.steal_percent(steal_before, cpu.host_times())
        report = _report(raw, steal, rounds, duration, connections, worker_class or "sync")
    finally:
        for server in servers:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "http.json").write_text(json.dumps(report, indent=2))
    return report


def _report(
    raw, steal: float, rounds: int, duration: float, connections: int, worker_class: str
) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for name, _, _, _, _ in PAIRS:
        per_round = [
            s.rps / b.rps for b, s in zip(raw[name]["baseline"], raw[name]["service"], strict=True)
        ]
        ratios[name] = {
            **_summary(per_round),
            "rounds": per_round,
            "target": TARGETS[name],
            "passed": statistics.median(per_round) >= TARGETS[name],
        }
    b2 = [m.rps for m in raw["reco_get_vs_db"]["baseline"]]
    b1 = [m.rps for m in raw["hello"]["baseline"]]
    ratios["db_vs_hello"] = {
        **_summary([x / y for x, y in zip(b2, b1, strict=True)]),
        "informational": True,
    }
    spread = max(statistics.pstdev(v) / statistics.mean(v) for v in (b1, b2))
    absolute = {
        name: {side: [dataclasses.asdict(m) for m in runs] for side, runs in sides.items()}
        for name, sides in raw.items()
    }
    return {
        "ratios": ratios,
        "absolute": absolute,
        "noise": {
            "steal_percent": round(steal, 2),
            "baseline_cv": round(spread, 3),
            "noisy": steal > 5 or spread > 0.1,
        },
        "config": {
            "rounds": rounds,
            "duration_s": duration,
            "connections": connections,
            "worker_class": worker_class,
            "generator": "wrk -t1",
            "cpus": os.cpu_count(),
        },
    }
