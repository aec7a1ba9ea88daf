"""Side-by-side HTTP benchmark: the service against bare Flask baselines, interleaved rounds.

B1 ``/hello``, B2 ``/db`` (one indexed SELECT) and B2w ``/write`` (insert + commit) run on a
bare Flask app under the service's own gunicorn config; GET recommendations and POST events
run on the service. Each round measures B then S; one more baseline closes the last round,
so ratio_r = S_r / mean(B_r, B_r+1) (docs/performance.md, Method).

The gated baselines are the bare app with the service's access line and request series
(identical logging and metrics settings); the same routes without them give the
informational ``*_plain`` ratios, which charge the log line and the metrics to the service.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from harness.bench import cpu, wrk
from harness.bench.bare_app import setup_database
from harness.pytest_plugins.gunicorn import GunicornServer
from harness.stack import PostgresServer
from migrations.runner import up

# (name, baseline path, service path, lua for baseline, lua for service)
PAIRS = (
    ("R_http", "/db", "/v1/users/{user}/recommendations", None, wrk.GET_USERS_LUA),
    ("R_write", "/write", "/v1/events", wrk.POST_EVENTS_LUA, wrk.POST_EVENTS_LUA),
)
LABELS = {
    "R_http": ("B2 bare /db", "S1 GET recommendations"),
    "R_write": ("B2w bare /write", "POST /v1/events"),
}
PLAIN_LABELS = {
    "R_http": "B2 bare /db, no log or metrics",
    "R_write": "B2w bare /write, no log or metrics",
}
TARGETS = {"R_http": 0.75, "R_write": 0.6}
# History for 800 of the 1,000 users the GET script asks for, so most requests take the
# personal path (affinity in 3 of 40 categories, 20 items seen, half of them in the popular
# pool of 200) and the rest the popular fallback, as a catalogue with returning users does.
HISTORY = """
INSERT INTO user_category_affinity (user_id, category_id, weight)
SELECT 'u-' || u, ((u * 7 + k * 13) % 40) + 1, k * 1.5
FROM generate_series(1, 800) u, generate_series(1, 3) k
ON CONFLICT DO NOTHING;
INSERT INTO user_item_interactions (user_id, item_id, interactions, last_at)
SELECT 'u-' || u, ((u * 37 + n * 101) % 400) + 1, 1 + n % 3, now() - n * interval '1 minute'
FROM generate_series(1, 800) u, generate_series(1, 20) n
ON CONFLICT DO NOTHING;
ANALYZE user_category_affinity, user_item_interactions;
"""


@dataclasses.dataclass
class Measurement:
    """One wrk run against one endpoint with the CPU its server and PostgreSQL burnt."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s_per_1k: float
    pg_cpu_s_per_1k: float


def _measure(
    server: GunicornServer,
    pg: PostgresServer,
    path: str,
    lua: str | None,
    duration: float,
    connections: int,
) -> Measurement:
    before = cpu.cumulative_seconds(server.proc.pid)
    pg_before = cpu.cumulative_seconds(pg.pid) if pg.pid else 0.0
    result = wrk.run(server.url + path, duration, connections, lua)
    used = cpu.cumulative_seconds(server.proc.pid) - before
    pg_used = (cpu.cumulative_seconds(pg.pid) if pg.pid else 0.0) - pg_before
    per_1k = 1000 / result.requests if result.requests else float("nan")
    return Measurement(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        round(used * per_1k, 4),
        round(pg_used * per_1k, 4),
    )


def prepare_database(url: str) -> None:
    """Migrate a fresh database, add the baselines' tables and the users' history."""
    up(url, log=lambda _m: None)
    setup_database(url)
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(HISTORY)
    finally:
        conn.close()


def worker_env(worker_class: str | None, workers: int | None) -> dict[str, str]:
    """The gunicorn worker settings every app of one run gets (the method: one config)."""
    env: dict[str, str] = {}
    if worker_class:
        env["RECO_GUNICORN_WORKER_CLASS"] = worker_class
        if worker_class == "gthread":
            env.update(RECO_GUNICORN_WORKERS="2", RECO_GUNICORN_THREADS="4")
    if workers:
        env["RECO_GUNICORN_WORKERS"] = str(workers)
    return env


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min, max, the values and the noise flag of one ratio's rounds."""
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else float("inf")
    return {
        "median": round(median, 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "rounds": [round(v, 4) for v in values],
        "noisy": spread > 0.15,
    }


def run(
    rounds: int = 3,
    duration: float = 5.0,
    connections: int = 16,
    worker_class: str | None = None,
    out: Path | None = None,
    *,
    workers: int | None = None,
    pg: PostgresServer | None = None,
    warmup: float = 2.0,
    log_level: str = "INFO",
    plain: bool = True,
) -> dict[str, Any]:
    """Run every pair for ``rounds`` interleaved rounds; return ratios with median/min/max.

    ``plain`` also measures the bare routes without the access line and metrics (the
    informational ``*_plain`` ratios); without it B1 runs on the observed app.

    ``pg`` is a running private PostgreSQL to share (a fresh database is created in it);
    without one, a private server is started and stopped here.
    """
    if not wrk.available():
        raise RuntimeError("wrk not installed: apt-get install -y wrk")
    root = Path(tempfile.mkdtemp(prefix="reco-bench-http-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    own_pg = pg is None
    server_pg = pg if pg is not None else PostgresServer(root / "pg")
    servers: list[GunicornServer] = []
    try:
        if own_pg:
            server_pg.start()
        url = server_pg.create_database(f"reco_http_{uuid.uuid4().hex[:8]}")
        prepare_database(url)
        env = {
            "RECO_DATABASE_URL": url,
            "RECO_ENV": "development",
            "RECO_LOG_LEVEL": log_level,  # as deployed: one JSON access line per request
            "RECO_GUNICORN_LOGLEVEL": "warning",
        }
        env.update(worker_env(worker_class, workers))
        workers = int(env.get("RECO_GUNICORN_WORKERS", "4"))
        plain_server: GunicornServer | None = None
        if plain:
            plain_server = GunicornServer(env, workers, app="harness.bench.bare_app:app")
            servers.append(plain_server)
        observed = GunicornServer(env, workers, app="harness.bench.bare_app:observed_app()")
        servers.append(observed)
        service = GunicornServer(env, workers)
        servers.append(service)
        steal_before = cpu.host_times()
        raw = _interleave(
            {"plain": plain_server, "baseline": observed, "service": service},
            server_pg,
            rounds,
            duration,
            connections,
            warmup,
        )
        steal = cpu.steal_percent(steal_before, cpu.host_times())
        config = {
            "rounds": rounds,
            "duration_s": duration,
            "warmup_s": warmup,
            "connections": connections,
            "worker_class": worker_class or "sync",
            "gunicorn_workers": workers,
            "service_log_level": log_level,
            "generator": "wrk -t1",
            "baseline": "bare Flask with the service's JSON access line and request series",
            "plain_baseline": "the same bare routes without them (informational ratios)"
            if plain
            else "not measured (B1 on the baseline app)",
            "database": "private PostgreSQL over TCP 127.0.0.1, fsync on"
            if not server_pg.test_mode
            else "private PostgreSQL over TCP 127.0.0.1, fsync off",
        }
        report = _report(raw, steal, config)
    finally:
        for server in servers:
            server.stop()
        if own_pg:
            server_pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "http.json").write_text(json.dumps(report, indent=2))
    return report


def _interleave(servers, pg, rounds, duration, connections, warmup):
    """hello, then plain B, B and S of each pair per round; closing Bs per pair after the last.

    ``servers`` maps "plain" (or None), "baseline" and "service" to their gunicorn servers.
    """
    measure = lambda srv, path, lua, d=duration: _measure(srv, pg, path, lua, d, connections)  # noqa: E731
    plain, baseline, service = servers["plain"], servers["baseline"], servers["service"]
    if warmup > 0:  # pools, caches and bytecode warm up; discarded
        for _, base_path, svc_path, base_lua, svc_lua in PAIRS:
            if plain is not None:
                measure(plain, base_path, base_lua, warmup)
            measure(baseline, base_path, base_lua, warmup)
            measure(service, svc_path, svc_lua, warmup)
    raw: dict[str, dict[str, list[Measurement]]] = {"hello": {"baseline": []}}
    for name, *_ in PAIRS:
        raw[name] = {"plain": [], "baseline": [], "service": []}
    for r in range(rounds + 1):
        if r < rounds:
            raw["hello"]["baseline"].append(measure(plain or baseline, "/hello", None))
        for name, base_path, svc_path, base_lua, svc_lua in PAIRS:
            if plain is not None:
                raw[name]["plain"].append(measure(plain, base_path, base_lua))
            raw[name]["baseline"].append(measure(baseline, base_path, base_lua))
            if r < rounds:
                raw[name]["service"].append(measure(service, svc_path, svc_lua))
    return raw


def _report(raw, steal: float, config: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    cpu_cost: dict[str, Any] = {}
    for name, *_ in PAIRS:
        base, svc, plain = raw[name]["baseline"], raw[name]["service"], raw[name]["plain"]
        ratios[name] = {**summary(_per_round(svc, base)), "target": TARGETS[name]}
        if plain:
            ratios[f"{name}_plain"] = {**summary(_per_round(svc, plain)), "info": True}
        base_cpu = _cpu(base)
        svc_cpu = _cpu(svc)
        cost = (svc_cpu["gunicorn"] + svc_cpu["postgres"]) / (
            base_cpu["gunicorn"] + base_cpu["postgres"]
        )
        cpu_cost[name] = {
            LABELS[name][0]: base_cpu,
            LABELS[name][1]: svc_cpu,
            **({PLAIN_LABELS[name]: _cpu(plain)} if plain else {}),
            "cost_ratio": round(cost, 3),
            "reciprocal_of_ratio": round(1 / ratios[name]["median"], 3),
        }
    b1 = [m.rps for m in raw["hello"]["baseline"]]
    b2 = [m.rps for m in (raw["R_http"]["plain"] or raw["R_http"]["baseline"])[: len(b1)]]
    ratios["R_hello"] = {**summary([x / y for x, y in zip(b2, b1, strict=True)]), "info": True}
    absolute = {
        name: {side: [dataclasses.asdict(m) for m in runs] for side, runs in sides.items()}
        for name, sides in raw.items()
    }
    medians = {
        "B1_hello_rps": statistics.median(b1),
        "B2_db_rps": statistics.median(m.rps for m in raw["R_http"]["baseline"]),
        "S1_reco_rps": statistics.median(m.rps for m in raw["R_http"]["service"]),
        "B2w_write_rps": statistics.median(m.rps for m in raw["R_write"]["baseline"]),
        "events_post_rps": statistics.median(m.rps for m in raw["R_write"]["service"]),
        "S1_reco_p99_ms": statistics.median(m.p99_ms for m in raw["R_http"]["service"]),
        "B2_db_p99_ms": statistics.median(m.p99_ms for m in raw["R_http"]["baseline"]),
    }
    for name, key in (("R_http", "B2_db_plain_rps"), ("R_write", "B2w_write_plain_rps")):
        if raw[name]["plain"]:
            medians[key] = statistics.median(m.rps for m in raw[name]["plain"])
    errors = sum(m.errors for sides in raw.values() for runs in sides.values() for m in runs)
    cpu_cost["B1 bare /hello"] = _cpu(raw["hello"]["baseline"])
    spread = max(statistics.pstdev(v) / statistics.mean(v) for v in (b1, b2))
    return {
        "ratios": ratios,
        "absolute": {**{k: round(v, 2) for k, v in medians.items()}, "errors": errors},
        "cpu_s_per_1k": cpu_cost,
        "runs": absolute,
        "noise": {
            "steal_percent": round(steal, 2),
            "baseline_cv": round(spread, 3),
            "noisy": steal > 5 or spread > 0.1,
        },
        "config": {**config, "cpus": os.cpu_count()},
    }


def _per_round(svc: list[Measurement], base: list[Measurement]) -> list[float]:
    """ratio_r = S_r / mean(B_r, B_r+1)."""
    return [s.rps / ((base[i].rps + base[i + 1].rps) / 2) for i, s in enumerate(svc)]


def _cpu(runs: list[Measurement]) -> dict[str, float]:
    return {
        "gunicorn": round(statistics.median(m.cpu_s_per_1k for m in runs), 4),
        "postgres": round(statistics.median(m.pg_cpu_s_per_1k for m in runs), 4),
    }
