"""Profiles that explain missed targets: py-spy on gunicorn under wrk, cProfile of the workers.

``python -m harness.bench.profile TARGET``: ``http --path get|post|db|write`` samples the
gunicorn workers with py-spy while wrk drives one endpoint (where the CPU went, by frame
and category); ``ablate`` and ``wsgi`` measure and cProfile one request in-process;
``relay|consumer`` run an in-process drain under cProfile; ``e2e`` measures end-to-end
latency at fractions of the relay's rate and ``e2e-series [--share S]`` once, as a time series
of latency beside each process tree's CPU; ``claim`` samples the claim query's plan during
drains. py-spy is not a project dependency: ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from harness.bench import cpu, wrk
from harness.bench.http import prepare_database
from harness.pytest_plugins.gunicorn import GunicornServer
from harness.stack import PostgresServer, RabbitServer
from migrations.runner import up

# Inclusive shares: a sample counts for a category when any of its frames matches.
CATEGORIES = {
    "prometheus exporter / client": ("prometheus_flask_exporter", "prometheus_client"),
    "logging (JSON access line)": ("/logging/", "service/logs.py"),
    "JSON Schema validation": ("jsonschema", "service/openapi.py"),
    "psycopg2 / libpq round trips": ("psycopg2", "service/db/"),
    "JSON (orjson, strict_json)": ("orjson", "strict_json"),
    "werkzeug request/response": ("werkzeug",),
    "service middleware": ("service/middleware.py", "service/shedding.py"),
    "service handlers": ("service/api/",),
}
# What the service adds to a request, for the cumulative view of profile_wsgi.
SERVICE_FRAMES = (
    r"service/|prometheus_flask_exporter/__init__|logging/__init__.py.*\((info|handle|emit)\)"
    r"|flask/app.py.*\((process_response"
    r"|preprocess_request|dispatch_request|full_dispatch_request)\)"
)
ENDPOINTS = {
    "get": ("/v1/users/{user}/recommendations", wrk.GET_USERS_LUA),
    "post": ("/v1/events", wrk.POST_EVENTS_LUA),
    "db": ("/db", None),
    "write": ("/write", wrk.POST_EVENTS_LUA),
}


def summarise_collapsed(text: str, top: int = 25) -> str:
    """Self and inclusive shares per frame, and category shares, from py-spy raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        for name, needles in CATEGORIES.items():
            if any(n in frame for frame in frames for n in needles):
                categories[name] += count
    if not total:
        return "no samples"
    pct = lambda n: f"{100 * n / total:5.1f} %"  # noqa: E731
    lines = [f"{total} samples holding the GIL", "", "category (inclusive):"]
    lines += [f"  {pct(n)}  {name}" for name, n in categories.most_common()]
    lines += ["", "top frames by self time:"]
    lines += [f"  {pct(n)}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "top frames by inclusive time:"]
    lines += [f"  {pct(n)}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def profile_http(path: str, seconds: float, rate: int = 250, app: str = "service") -> str:
    """py-spy every gunicorn worker while wrk drives one endpoint; return the summary."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy not found on PATH: pip install py-spy")
    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    pg = PostgresServer(root / "pg")
    server = None
    try:
        pg.start()
        url = pg.create_database(f"reco_{uuid.uuid4().hex[:6]}")
        prepare_database(url)
        env = {"RECO_DATABASE_URL": url, "RECO_ENV": "development", "RECO_LOG_LEVEL": "INFO"}
        target = "harness.bench.bare_app:app" if app == "bare" else "service.wsgi:app"
        server = GunicornServer(env, 4, app=target)
        endpoint, lua = ENDPOINTS[path]
        wrk.run(server.url + endpoint, 2, 16, lua)  # warm-up
        raw = root / "profile.txt"
        spy_proc = subprocess.Popen(  # noqa: S603 - py-spy from PATH, our pid
            [spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--format", "raw",
             "--rate", str(rate), "--duration", str(int(seconds)), "--output", str(raw),
             "--gil"],  # only threads holding the GIL: Python CPU, not waits on I/O
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = wrk.run(server.url + endpoint, seconds, 16, lua)
        spy_proc.wait(timeout=seconds + 60)
        header = f"{app} {endpoint}: {result.rps:.0f} rps under py-spy ({rate} Hz)\n"
        return header + summarise_collapsed(raw.read_text() if raw.exists() else "")
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _silence_logs() -> None:
    """Send the service's log lines to /dev/null, as a worker sends them to its log file."""
    import logging

    for handler in logging.getLogger("reco").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the app


def profile_wsgi(requests: int = 3000, top: int = 25) -> str:
    """CPU per request in-process (one WSGI call, no server): service vs bare, then cProfile.

    Both apps answer through werkzeug's test client against the same private PostgreSQL,
    so the difference is what the service's code adds to one request, with the server
    (gunicorn accept, parse, close) left out. Log lines go to /dev/null as in a worker.
    """
    import contextlib
    import sys
    import time

    from harness.bench import bare_app
    from service.app import create_app
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    pg = PostgresServer(root / "pg")
    try:
        pg.start()
        url = pg.create_database("reco")
        prepare_database(url)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(root))
        os.environ["RECO_DATABASE_URL"] = url
        service = create_app(
            Settings.from_env({"RECO_DATABASE_URL": url, "RECO_ENV": "development"})
        ).test_client()
        _silence_logs()
        bare = bare_app.app.test_client()
        headers = {"X-API-Key": "dev-key"}
        calls = {
            "bare GET /db": lambda i: bare.get("/db"),
            "service GET recommendations": lambda i: service.get(
                f"/v1/users/u-{i % 1000}/recommendations", headers=headers
            ),
        }
        lines = []
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            sys.stderr.flush()
            for name, call in calls.items():
                for i in range(200):  # warm-up: pools, caches, validators
                    call(i)
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(requests):
                    call(i)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                lines.append(
                    f"{name}: {1e6 * cpu / requests:.0f} µs CPU, "
                    f"{1e6 * wall / requests:.0f} µs wall per request (this process)"
                )
            # CPU time, not wall: waits on PostgreSQL are not the service's cost.
            profiler = cProfile.Profile(time.process_time)
            service_get = calls["service GET recommendations"]
            profiler.runcall(lambda: [service_get(i) for i in range(requests)])
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(SERVICE_FRAMES, top)
        stats.sort_stats("tottime").print_stats(top)
        return "\n".join(lines) + "\n\n" + out.getvalue()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def ablate_wsgi(requests: int = 2000, repeats: int = 3) -> str:
    """CPU per GET recommendations in-process with one part of the service switched off.

    Variants run interleaved ``repeats`` times (median kept), so the deltas share the
    machine's noise: what a part costs is full minus the variant without it.
    """
    import logging
    import statistics
    import time

    from harness.bench import bare_app
    from service import openapi
    from service.app import create_app
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    pg = PostgresServer(root / "pg")
    try:
        pg.start()
        url = pg.create_database("reco")
        prepare_database(url)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(root))
        os.environ["RECO_DATABASE_URL"] = url
        settings = Settings.from_env({"RECO_DATABASE_URL": url, "RECO_ENV": "development"})
        app = create_app(settings)
        _silence_logs()
        client, bare = app.test_client(), bare_app.app.test_client()
        headers = {"X-API-Key": "dev-key"}
        hooks: dict[str, dict[Any, list]] = {
            "before": dict(app.before_request_funcs),
            "after": dict(app.after_request_funcs),
        }
        validate = openapi.validate

        def without(module: str) -> None:
            for table, saved in ((app.before_request_funcs, hooks["before"]),
                                 (app.after_request_funcs, hooks["after"])):  # fmt: skip
                kept = [f for f in saved.get(None, []) if not f.__module__.startswith(module)]
                table[None] = kept

        service_metrics = app.extensions["reco"].metrics

        def restore() -> None:
            app.before_request_funcs.update({k: list(v) for k, v in hooks["before"].items()})
            app.after_request_funcs.update({k: list(v) for k, v in hooks["after"].items()})
            logging.getLogger("reco").setLevel(logging.INFO)
            openapi.validate = validate
            vars(service_metrics).pop("observe_request", None)  # the method again

        variants = {
            "service, as deployed": lambda: None,
            "no JSON access log": lambda: logging.getLogger("reco").setLevel(logging.WARNING),
            "no request metrics": lambda: setattr(
                service_metrics, "observe_request", lambda *a: None
            ),
            "no service middleware hooks": lambda: without("service.middleware"),
            "no OpenAPI validation": lambda: setattr(openapi, "validate", lambda *a, **k: None),
        }
        samples: dict[str, list[float]] = {name: [] for name in [*variants, "bare /db"]}
        for i in range(200):  # warm-up
            client.get(f"/v1/users/u-{i}/recommendations", headers=headers)
            bare.get("/db")
        for _ in range(repeats):
            for name, switch in variants.items():
                switch()
                cpu = time.process_time()
                for i in range(requests):
                    client.get(f"/v1/users/u-{i % 1000}/recommendations", headers=headers)
                samples[name].append(1e6 * (time.process_time() - cpu) / requests)
                restore()
            cpu = time.process_time()
            for _ in range(requests):
                bare.get("/db")
            samples["bare /db"].append(1e6 * (time.process_time() - cpu) / requests)
        full = statistics.median(samples["service, as deployed"])
        lines = ["CPU µs per request in-process (werkzeug test client, median of interleaved runs)"]
        for name, values in samples.items():
            value = statistics.median(values)
            delta = (
                "" if name == "service, as deployed" else f"  (full - this: {full - value:+.0f})"
            )
            lines.append(f"  {value:6.0f}  {name}{delta}")
        return "\n".join(lines)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def profile_worker(kind: str, events: int, top: int = 30) -> str:
    """cProfile an in-process relay or consumer drain of ``events``; return the top entries."""
    import time

    from harness.bench import workers as bench

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users traverse it
    pg, rabbit = PostgresServer(root / "pg"), RabbitServer(root / "rmq")
    try:
        pg.start()
        rabbit.start()
        url = pg.create_database("reco")
        up(url, log=lambda _m: None)
        settings = bench.bench_settings(url, rabbit.url)
        if kind == "relay":
            bench.relay_drain(settings, events // 5)  # warm-up
            run = lambda: bench.relay_drain(settings, events)  # noqa: E731
        else:
            bench.consumer_drain(settings, bench.messages_for(bench.make_events(events // 5)))
            messages = bench.messages_for(bench.make_events(events))
            run = lambda: bench.consumer_drain(settings, messages)  # noqa: E731
        profiler = cProfile.Profile(time.process_time)  # CPU, not waits on the servers
        rate = profiler.runcall(run)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return f"{kind}: {rate.per_s:.0f} events/s under cProfile\n{out.getvalue()}"
    finally:
        rabbit.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _servers(root: Path) -> tuple[PostgresServer, RabbitServer, str]:
    pg, rabbit = PostgresServer(root / "pg"), RabbitServer(root / "rmq")
    pg.start()
    rabbit.start()
    url = pg.create_database("reco")
    up(url, log=lambda _m: None)
    return pg, rabbit, url


def e2e_curve(shares: tuple[float, ...] = (0.1, 0.25, 0.5), seconds: float = 15) -> str:
    """End-to-end latency at fractions of the relay's solo drain rate (durable PostgreSQL)."""
    from harness.bench import workers as bench

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users traverse it
    pg, rabbit, url = _servers(root)
    try:
        settings = bench.bench_settings(url, rabbit.url)
        capacity = bench.relay_drain(settings, 20_000).per_s
        lines = [
            f"relay alone: {capacity:.0f} events/s",
            "share  offered/s  p50  p95  p99  max (ms)",
        ]
        for share in shares:
            r = bench.e2e_latency(settings, capacity * share, seconds, root)
            lines.append(
                f"{share:5.2f}  {r['offered_per_s']:9.0f}  {r['p50_ms']}  {r['p95_ms']}"
                f"  {r['p99_ms']}  {r['max_ms']}"
            )
        return "\n".join(lines)
    finally:
        rabbit.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def e2e_series(share: float = 0.5, seconds: float = 15, window_s: float = 0.25) -> str:
    """S4 once, as a time series: latency per commit window beside each process tree's CPU.

    Tells an episode (a backlog forming and draining on a busy host) from a stall of one
    component: what ran, or stopped running, in the windows where latency climbed.
    """
    import threading
    import time

    import psycopg2

    from harness.bench import workers as bench

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users traverse it
    pg, rabbit, url = _servers(root)
    samples: list[Sample] = []
    stop = threading.Event()

    def sample() -> None:
        samples.append(
            Sample(
                time.time(),
                cpu.host_busy(),
                cpu.cumulative_seconds(pg.pid) if pg.pid else 0.0,
                cpu.cumulative_seconds(rabbit.pid) if rabbit.pid else 0.0,
            )
        )

    def loop() -> None:
        while not stop.wait(window_s):
            sample()

    try:
        settings = bench.bench_settings(url, rabbit.url)
        capacity = bench.relay_drain(settings, 20_000).per_s
        sample()
        thread = threading.Thread(target=loop, name="e2e-series", daemon=True)
        thread.start()
        try:
            result = bench.e2e_latency(settings, capacity * share, seconds, root)
        finally:
            stop.set()
            thread.join(timeout=5)
        conn = psycopg2.connect(url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT EXTRACT(EPOCH FROM event_created),"
                    " EXTRACT(EPOCH FROM applied_at - event_created) FROM inbox"
                    " WHERE event_created >= to_timestamp(%s)",
                    (samples[0].wall,),
                )
                latencies = [(float(t), float(lat)) for t, lat in cur.fetchall()]
        finally:
            conn.close()
        head = (
            f"relay alone {capacity:.0f}/s; offered {result['offered_per_s']:.0f}/s; "
            f"p50 {result['p50_ms']} p99 {result['p99_ms']} max {result['max_ms']} ms; "
            f"host busy {result['host_busy']}"
        )
        return "\n".join([head, *series_rows(samples, latencies, os.cpu_count() or 1)])
    finally:
        rabbit.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


class Sample(NamedTuple):
    """One reading of the clock, the host's CPU and two server trees' cumulative CPU."""

    wall: float
    host: tuple[int, int]  # cpu.host_busy(): (busy, total) jiffies
    postgres_s: float
    rabbitmq_s: float


def series_rows(
    samples: list[Sample], latencies: list[tuple[float, float]], ncpu: int
) -> list[str]:
    """One line per window: commit-to-applied p50/max of events committed in it, CPU in cores."""
    rows = ["   t s  p50/max ms  | cores: host postgres rabbitmq rest (workers, producer)"]
    for before, after in zip(samples, samples[1:], strict=False):
        span = after.wall - before.wall
        if span <= 0:
            continue
        window = sorted(lat for t, lat in latencies if before.wall <= t < after.wall)
        lat = (
            f"{1000 * window[len(window) // 2]:5.0f}/{1000 * window[-1]:5.0f}"
            if window
            else "    -/    -"
        )
        host = cpu.busy_share(before.host, after.host) * ncpu
        pg = (after.postgres_s - before.postgres_s) / span
        rmq = (after.rabbitmq_s - before.rabbitmq_s) / span
        rest = max(0.0, host - pg - rmq)
        t = after.wall - samples[0].wall
        rows.append(f"{t:6.2f}  {lat}  |  {host:4.2f}  {pg:6.2f}  {rmq:6.2f}  {rest:6.2f}")
    return rows


def claim_cost(backlogs: tuple[int, ...] = (1_000, 100_000), every: int = 50) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the relay's claim, sampled while a relay drains a backlog."""
    import json
    import time

    import psycopg2

    from harness.bench import workers as bench
    from workers import outbox
    from workers.relay import Relay

    root = Path(tempfile.mkdtemp(prefix="reco-profile-"))
    os.chmod(root, 0o755)  # noqa: S103 - service users traverse it
    pg, rabbit, url = _servers(root)
    probe = psycopg2.connect(url, connect_timeout=5)
    try:
        settings = bench.bench_settings(url, rabbit.url)

        def explain() -> dict:
            with probe.cursor() as cur:
                cur.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + outbox.CLAIM,
                    {"limit": settings.relay_batch_size, "after": 0},
                )
                plan = cur.fetchone()[0][0]
                cur.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox'")
                dead = cur.fetchone()[0]
            probe.rollback()  # the EXPLAIN ANALYZE locked rows: give them back
            top = plan["Plan"]
            buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
            return {"ms": round(plan["Execution Time"], 2), "buffers": buffers, "dead": dead}

        lines = []
        for backlog in backlogs:
            bench.seed_outbox(url, bench.make_events(backlog))
            relay = Relay(settings)
            relay.prepare()
            samples, batches, start = [explain()], 0, time.perf_counter()
            while relay.run_once():
                batches += 1
                if batches % every == 0:
                    samples.append(explain())
            seconds = time.perf_counter() - start
            relay.close()
            lines.append(f"backlog {backlog}: {backlog / seconds:.0f} events/s; claims:")
            lines += [f"  {json.dumps(s)}" for s in samples]
        return "\n".join(lines)
    finally:
        probe.close()
        rabbit.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "target",
        choices=["http", "wsgi", "ablate", "relay", "consumer", "e2e", "e2e-series", "claim"],
    )
    parser.add_argument("--share", type=float, default=0.5, help="e2e-series: of relay capacity")
    parser.add_argument("--path", choices=sorted(ENDPOINTS), default="get")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.target == "e2e":
        print(e2e_curve())
    elif args.target == "e2e-series":
        print(e2e_series(args.share, args.seconds))
    elif args.target == "claim":
        print(claim_cost())
    elif args.target == "ablate":
        print(ablate_wsgi())
    elif args.target == "wsgi":
        print(profile_wsgi())
    elif args.target == "http":
        app = "bare" if args.path in ("db", "write") else "service"
        print(profile_http(args.path, args.seconds, app=app))
    else:
        print(profile_worker(args.target, args.events))


if __name__ == "__main__":
    main()
