"""`reco-harness bench system`: every baseline and component side by side in one run.

One private PostgreSQL (durable: fsync and synchronous_commit on, as deployed) and one
private RabbitMQ serve every section, so each ratio compares a component with its bare
baseline on the same servers, minutes apart at most, in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bench import cpu, environment, http, pg, pipeline
from harness.bench import workers as bench
from harness.bench.sampler import CpuSampler
from harness.stack import PostgresServer, RabbitServer
from migrations.runner import up


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run."""

    mode: str
    rounds: int
    http_duration: float
    http_warmup: float
    pgbench_scale: int
    pgbench_seconds: float
    fsync_seconds: int
    idle_seconds: float
    relay_events: int
    per_message_events: int
    consumer_events: int
    e2e_seconds: float
    backlog_sizes: tuple[int, ...]
    backlog_small: int
    backlog_repeats: int
    instance_events: int
    instance_counts: tuple[int, ...]
    inbox_sizes: tuple[int, ...]
    inbox_events: int
    sweep_rounds: int
    half_pipeline: bool = True  # S4 at half the pipeline's rate too (information)
    bare_publishers: bool = True  # R_publishers_k beside R_relays_k (information)


PLANS = {
    # CI: a few minutes on 2 shared cores; every ratio, smaller samples.
    # S4' and R_publishers_k (information) are left out: they would cost ≈ 15 s and ≈ 10 s.
    "quick": Plan("quick", 3, 2, 1, 1, 3, 1, 2, 10_000, 1_000, 5_000, 8,
                  (10_000, 100_000), 1_000, 4, 12_000, (1, 2, 4), (100_000,), 10_000, 1,
                  half_pipeline=False, bare_publishers=False),
    "default": Plan("default", 5, 10, 3, 10, 10, 2, 5, 20_000, 1_500, 10_000, 15,
                    (10_000, 100_000), 1_000, 10, 30_000, (1, 2, 4), (100_000,), 10_000, 2),
    # The full method: 20 s wrk rounds after warm-up, the 1e6 backlog and inbox.
    "full": Plan("full", 5, 20, 5, 10, 20, 2, 5, 20_000, 1_500, 10_000, 30,
                 (10_000, 100_000, 1_000_000), 1_000, 10, 30_000, (1, 2, 4),
                 (100_000, 1_000_000), 10_000, 3),
}  # fmt: skip


class Run:
    """The servers of one system benchmark and the report it fills section by section."""

    def __init__(self, plan: Plan, log: Callable[[str], None] = print):
        self.plan, self.log = plan, log
        self.root = Path(tempfile.mkdtemp(prefix="reco-bench-system-"))
        os.chmod(self.root, 0o755)  # noqa: S103 - postgres and rabbitmq users traverse it
        self.pg = PostgresServer(self.root / "pg")  # durable: commits pay fsync as deployed
        self.rabbit = RabbitServer(self.root / "rmq")
        self.report: dict[str, Any] = {
            "mode": plan.mode,
            "ratios": {},
            "latency": {},
            "absolute": {},
            "cpu_s_per_1k": {},
            "config": {"plan": dataclasses.asdict(plan)},
            "errors": {},
            "durations_s": {},
        }

    def section(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        """Run one section; merge its result, or record its error and go on."""
        self.log(f"[bench] {name} ...")
        start = time.monotonic()
        try:
            result = fn() or {}
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the rest
            self.report["errors"][name] = f"{type(exc).__name__}: {exc}"
            self.log(f"[bench] {name} FAILED: {exc}\n{traceback.format_exc(limit=3)}")
            result = {}
        seconds = round(time.monotonic() - start, 1)
        self.report["durations_s"][name] = seconds
        for key in ("ratios", "latency", "absolute", "cpu_s_per_1k"):
            self.report[key].update(result.get(key, {}))
        if "config" in result:
            self.report["config"][name] = result["config"]
        self.log(f"[bench] {name} done in {seconds:.0f} s")

    def database(self, name: str) -> str:
        """A migrated database cloned from the run's template."""
        return self.pg.create_database(f"{name}_{uuid.uuid4().hex[:6]}", template="reco_template")

    def execute(self, workdir: Path) -> dict[str, Any]:
        """Start the servers, run every section, stop the servers; return the report."""
        plan, report = self.plan, self.report
        started = time.monotonic()
        report["environment"] = environment.describe()
        steal_before = cpu.host_times()
        try:
            self.pg.start()
            up(self.pg.create_database("reco_template"), log=lambda _m: None)
            self.section("B0 idle steal and fsync", self._physical)
            self.section("B1/B2/B2w vs HTTP", self._http)
            self.section("B3 pgbench", self._pgbench)
            self.rabbit.start()
            settings = bench.bench_settings(self.database("reco_workers"), self.rabbit.url)
            roots = {"postgres": lambda: self.pg.pid, "rabbitmq": lambda: self.rabbit.pid}
            with CpuSampler(roots) as sampler:
                self.section(
                    "B4 vs relay",
                    lambda: pipeline.relay_vs_publish(
                        settings, sampler, plan.relay_events, plan.rounds, plan.per_message_events
                    ),
                )
                self.section(
                    "B6 claim/mark loop",
                    lambda: pipeline.claim_mark_loop(settings, sampler, plan.relay_events),
                )
                self.section(
                    "B5 vs consumer",
                    lambda: pipeline.consumer_vs_bare(
                        settings, sampler, plan.consumer_events, plan.rounds
                    ),
                )
                self.section(
                    "S4 end-to-end latency",
                    lambda: pipeline.e2e(
                        settings,
                        self._relay_capacity(settings),
                        plan.e2e_seconds,
                        workdir,
                        plan.relay_events,
                        plan.half_pipeline,
                    ),
                )
                self.section(
                    "growth: backlog",
                    lambda: pipeline.backlog_sweep(
                        settings,
                        sampler,
                        list(plan.backlog_sizes),
                        plan.backlog_small,
                        plan.backlog_repeats,
                    ),
                )
                self.section(
                    "growth: relay instances",
                    lambda: pipeline.relay_instances(
                        settings,
                        plan.instance_events,
                        list(plan.instance_counts),
                        workdir,
                        plan.sweep_rounds,
                        plan.bare_publishers,
                    ),
                )
                dbs = {m: self.database(f"reco_inbox{m}") for m in (0, *plan.inbox_sizes)}
                self.section(
                    "growth: consumer inbox",
                    lambda: pipeline.inbox_sweep(
                        settings, dbs, sampler, plan.inbox_events, plan.sweep_rounds
                    ),
                )
        finally:
            self.rabbit.stop()
            self.pg.stop()
            shutil.rmtree(self.root, ignore_errors=True)
        self._derived()
        steal = cpu.steal_percent(steal_before, cpu.host_times())
        report["noise"] = self._noise(steal)
        report["environment"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        report["durations_s"]["total"] = round(time.monotonic() - started, 1)
        return report  # fmt: skip

    # -- sections ---------------------------------------------------------------------------
    def _physical(self) -> dict[str, Any]:
        before = cpu.host_times()
        time.sleep(self.plan.idle_seconds)
        idle_steal = cpu.steal_percent(before, cpu.host_times())
        fsync = pg.fsync_rate(self.pg.state_dir, self.plan.fsync_seconds)
        return {
            "absolute": {
                "B0_fsync_per_s": fsync["fsync_per_s"],
                "B0_idle_steal_percent": round(idle_steal, 2),
            },
            "config": {"pg_test_fsync": f"-s {self.plan.fsync_seconds}", **fsync},
        }

    def _http(self) -> dict[str, Any]:
        result = http.run(
            rounds=self.plan.rounds,
            duration=self.plan.http_duration,
            warmup=self.plan.http_warmup,
            pg=self.pg,
            plain=self.plan.mode != "quick",  # CI: the gated ratios only, to keep its time
        )
        self.report["http_noise"] = result["noise"]
        return result

    def _pgbench(self) -> dict[str, Any]:
        pg.pgbench_init(self.pg, "pgbench", self.plan.pgbench_scale)
        unix = pg.pgbench_select(self.pg, "pgbench", self.plan.pgbench_seconds, unix_socket=True)
        tcp = pg.pgbench_select(self.pg, "pgbench", self.plan.pgbench_seconds, unix_socket=False)
        return {
            "absolute": {"B3_pgbench_unix_tps": unix["tps"], "B3_pgbench_tcp_tps": tcp["tps"]},
            "cpu_s_per_1k": {
                "B3 pgbench -S (unix)": unix["cpu_s_per_1k"],
                "B3 pgbench -S (tcp)": tcp["cpu_s_per_1k"],
            },
            "config": {
                "command": "pgbench -S -M prepared -c 8 -j 2 -T N",
                "scale": self.plan.pgbench_scale,
                "seconds": self.plan.pgbench_seconds,
                "latency_ms": {"unix": unix["latency_ms"], "tcp": tcp["latency_ms"]},
            },
        }

    def _relay_capacity(self, settings) -> float:
        measured = self.report["absolute"].get("relay_events_per_s")
        return measured or bench.relay_drain(settings, self.plan.relay_events).per_s

    # -- derived ratios and noise --------------------------------------------------------------
    def _derived(self) -> None:
        """Ratios of numbers from different sections (informational)."""
        absolute, ratios = self.report["absolute"], self.report["ratios"]
        b2, b3 = absolute.get("B2_db_rps"), absolute.get("B3_pgbench_unix_tps")
        if b2 and b3:
            ratios["R_py"] = {"median": round(b2 / b3, 4), "info": True}
        tcp = absolute.get("B3_pgbench_tcp_tps")
        if tcp and b3:
            ratios["R_tcp_vs_unix"] = {"median": round(tcp / b3, 3), "info": True}
        relay, b6 = absolute.get("relay_events_per_s"), absolute.get("B6_claim_mark_rows_per_s")
        if relay and b6:
            ratios["R_db_share"] = {"median": round(relay / b6, 3), "info": True}
        b5, fsync = absolute.get("B5b_consume_commit_per_s"), absolute.get("B0_fsync_per_s")
        batch = self.report["config"].get("B5 vs consumer", {}).get("batch")
        if b5 and fsync and batch:
            ratios["R_commit"] = {"median": round(b5 / batch / fsync, 4), "info": True}

    def _noise(self, steal: float) -> dict[str, Any]:
        noisy = sorted(n for n, r in self.report["ratios"].items() if r.get("noisy"))
        return {
            "steal_percent": round(steal, 2),
            "noisy_ratios": noisy,
            "noisy": steal > 5 or bool(noisy),
            "rule": "a ratio is noisy when (max - min) / median > 0.15; the run when any is"
            " noisy or steal > 5 %",
        }


def run(mode: str = "default", rounds: int | None = None, log=print) -> dict[str, Any]:
    """Run the system benchmark in ``mode`` (quick, default, full); return the report."""
    plan = PLANS[mode]
    # The components' own warnings (a consumer pausing as it closes) are not results.
    logging.getLogger("reco").setLevel(logging.ERROR)
    if rounds:
        plan = dataclasses.replace(plan, rounds=rounds)
    workdir = Path(tempfile.mkdtemp(prefix="reco-bench-workers-"))
    try:
        return Run(plan, log).execute(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
