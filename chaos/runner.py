"""Run one experiment: load throughout, timed faults, heal, drain, audit, guardrail verdict."""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from chaos import probes
from chaos.actions import CLOCK_APPS, Faults, clock_file, commit_stall_active
from chaos.experiment import Experiment
from chaos.guardian import rollback_open
from chaos.ledger import Ledger
from harness import guardrails, runmeta, server_health
from harness.audit import Earlier, audit, consumer_unacked, earlier
from harness.pipeline_sampler import PipelineSampler
from harness.resources import stack_roots
from harness.stack import Stack
from harness.stack.stack import APP_PROCESSES
from service.wallclock import write_offset

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
DEFAULT_GUARDRAILS = Path(__file__).with_name("guardrails.toml")
INTERRUPTED = "interrupted: the experiment did not finish (no audit, no verdict)"
RECOVERY_TIMEOUT_S = 60.0
# After readiness returns, the breaker's reset period and the pools' reconnects may still
# turn away a few requests: "settled" load begins this long after it.
SETTLE_S = 2.0
DRAIN_TIMEOUT_S = 90.0
STEADY_TIMEOUT_S = 30.0


def guardrails_path(experiment: Experiment, default: Path | None = None) -> Path:
    """The rule file that judges ``experiment``: its own, else ``default``, else ours."""
    return experiment.guardrails or default or DEFAULT_GUARDRAILS


class LoadEnded(Exception):
    """The load generator stopped before the method finished: the faults met no traffic."""


class Interrupted(BaseException):
    """The run was stopped by a signal; faults are still rolled back.

    A BaseException like KeyboardInterrupt, so that a step's ``except Exception`` (a fault that
    failed to apply) cannot swallow it and carry the run on as if nothing had happened.
    """


@dataclasses.dataclass
class Window:
    """When one fault was active (unix seconds) and what it was."""

    label: str
    action: str
    start: float
    end: float | None = None
    error: str | None = None
    phase: str | None = None  # the step's own phase in phases.json, if it names one


class Run:
    """State of one experiment run; `execute()` returns the exit code."""

    def __init__(
        self,
        experiment: Experiment,
        stack: Stack,
        run_dir: Path,
        echo=print,
        guardrails_file: Path | None = None,
    ):
        self.experiment = experiment
        self.rules_path = guardrails_path(experiment, guardrails_file)
        self.stack = stack
        self.run_dir = run_dir
        self.echo = echo
        self.ledger = Ledger(run_dir / "faults.ledger")
        self.faults = Faults(stack)
        self.windows: list[Window] = []
        self.journal: dict[str, Any] = {
            "experiment": experiment.name,
            "title": experiment.title,
            "steady_state": {},
            "method": [],
            "rollbacks": [],
        }
        self.tail = probes.HistoryTail(run_dir)
        self.locust: subprocess.Popen | None = None
        self.load_started = 0.0
        self.before: Earlier | None = None
        self.api_log = server_health.LogMark(None, 0)
        self.readiness: list[tuple[float, int | None]] = []
        self.liveness: list[tuple[float, int | None]] = []
        # Deliveries the consumer's inbox absorbed: duplicates at the broker (allowed, G3).
        self.broker_duplicates = probes.CounterIncrease()
        # Set once cleanup starts: a signal then is remembered, not raised into the rollback.
        self.cleaning_up = False
        self.interrupted = False  # a signal stopped the run: a catalogue must stop too

    # -- the whole run -----------------------------------------------------------------------
    def execute(self) -> int:
        guardian = self._start_guardian()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return self._execute(guardian)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _execute(self, guardian: subprocess.Popen) -> int:
        failed = ""
        try:
            miswired = self._miswired()
            if miswired:
                return self._refused(
                    f"faults would reach nothing: {'; '.join(miswired)}",
                    "not running it (`reco-harness up --chaos` restarts them through it)",
                )
            leftovers = self._leftover_faults()
            if leftovers:
                return self._refused(
                    f"the stack still carries an earlier fault: {'; '.join(leftovers)}",
                    "not running it (restart the stack, or `reco-harness chaos rollback`)",
                )
            self._apply_switches()
            self.before = earlier(self.stack.database_url(), self.stack.amqp_url(), "reco")
            # Only this experiment's lines count: earlier runs on the stack logged to it too.
            self.api_log = server_health.mark(self.stack.state["components"]["api"].get("log"))
            self._count_broker_duplicates()  # the starting point: earlier runs' are not ours
            if not self._settle(STEADY_TIMEOUT_S):
                return self._refused(
                    "steady state does not hold before the experiment", "not running it"
                )
            self._start_load()
            sampler = PipelineSampler(
                self.stack.database_url(),
                self.stack.amqp_url(),
                "reco",
                self.run_dir / "pipeline.jsonl",
                processes=stack_roots(self.stack),
            ).start()
            try:
                self._run_method()
                self._wait_load()
            finally:
                sampler.stop()
        except Interrupted:
            self.interrupted = True
            self.echo("interrupted: rolling back every fault")
        except LoadEnded as exc:
            failed = str(exc)
            self.echo(f"{failed}: rolling back every fault; no verdict")
        finally:
            self.cleaning_up = True
            self._stop_load()
            self._rollback_all()  # the switches too, last
            self.ledger.path.with_suffix(".done").write_text("done\n")
            guardian.wait(timeout=10)
        if failed:
            self._record_unfinished(f"the experiment did not run as written: {failed}")
            return guardrails.EXIT_USAGE
        if not self.interrupted:
            # The drain and the audit may take minutes: a signal there stops them, and the run
            # is recorded as unfinished instead of leaving a directory judged by other rules.
            self.cleaning_up = False
            try:
                return self._conclude()
            except Interrupted:
                self.interrupted = True
                self.echo("interrupted during the audit: no verdict")
        self._record_interrupted()
        return guardrails.EXIT_USAGE

    def _miswired(self) -> list[str]:
        """Apps whose links bypass the fault proxies (read from the processes themselves)."""
        if not self.stack.chaos or not self.stack.toxiproxy_url:
            return ["the stack runs without fault proxies"]
        return [
            f"{name}: {problem}"
            for name in APP_PROCESSES
            if (problem := self.stack.miswired(name)) is not None
        ]

    def _leftover_faults(self) -> list[str]:
        components = self.stack.state.get("components", {})
        links = sorted(components.get("toxiproxy", {}).get("links", {}))
        # Whether each app's recorded process lives: no readiness probes needed here.
        apps = {
            name: self.stack.liveness(name, components[name]) == "running"
            for name in APP_PROCESSES
            if name in components
        }
        problems = probes.leftover_faults(self.stack.toxiproxy_url, links, apps)
        for name, env in sorted(self.stack.state.get("app_env", {}).items()):
            if env.get("RECO_UNSAFE_TEST_FAULTS"):
                problems.append(
                    f"{name} runs with test switches ({env['RECO_UNSAFE_TEST_FAULTS']})"
                )
        try:
            if commit_stall_active(self.stack.database_url()):
                problems.append("commits stall (synchronous_standby_names names the chaos standby)")
        except psycopg2.Error as exc:
            problems.append(f"PostgreSQL does not answer ({str(exc).strip()[:200]})")
        return problems

    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.cleaning_up:
            # Half a rollback is worse than a slow one; SIGKILL still leaves it to the guardian.
            self.interrupted = True
            self.echo(f"{name}: finishing the rollback first")
            return
        self.cleaning_up = True  # a second signal must not break into the rollback either
        raise Interrupted(name)

    def _start_guardian(self) -> subprocess.Popen:
        argv = [
            sys.executable,
            "-m",
            "chaos.guardian",
            "--ledger",
            str(self.ledger.path),
            "--state-dir",
            str(self.stack.state_dir),
            "--pid",
            str(os.getpid()),
        ]
        with open(self.run_dir / "guardian.log", "ab") as sink:
            # Its own session: a Ctrl-C aimed at the runner must not stop the guardian too.
            return subprocess.Popen(  # noqa: S603 - our own interpreter and module
                argv,
                cwd=ROOT,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    # -- test-only switches: a negative control's (breaks a guarantee), the clock's ----------
    def _switched_apps(self) -> dict[str, dict[str, str]]:
        """The apps this experiment restarts with test-only switches, and their environment."""
        switches: dict[str, list[str]] = {}
        control = self.experiment.negative_control
        if control:
            switches[str(control["component"])] = [str(control["switch"])]
        if self.experiment.skews_clocks:
            for name in CLOCK_APPS:
                switches.setdefault(name, []).append("wall_clock_offset")
        clock = {"RECO_TEST_CLOCK_FILE": str(clock_file(self.stack))}
        return {
            name: {
                "RECO_ENV": "test",
                "RECO_UNSAFE_TEST_FAULTS": ",".join(names),
                **(clock if "wall_clock_offset" in names else {}),
            }
            for name, names in switches.items()
        }

    def _apply_switches(self) -> None:
        switched = self._switched_apps()
        if not switched:
            return
        clock = clock_file(self.stack) if self.experiment.skews_clocks else None
        if clock is not None:
            write_offset(clock, 0.0)  # a dead run's step must not carry over
        # Ledgered before the first change and undone last (the ledger is LIFO): should this
        # runner die, even by SIGKILL, the guardian restarts the apps without the switches.
        self.ledger.opened(
            {"action": "switches", "apps": list(switched), "clock_file": clock and str(clock)}
        )
        for name, env in switched.items():
            self.echo(f"test switch: {name} with {env['RECO_UNSAFE_TEST_FAULTS']}")
            self.stack.set_app_env(name, env)
            self.stack.stop_app(name)
            self.stack.start_app(name)

    # -- load --------------------------------------------------------------------------------
    def _start_load(self) -> None:
        exp = self.experiment
        argv = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            self.api_url,
            "--profile",
            exp.load_profile,
            "--run-dir",
            str(self.run_dir),
            "--guardrails",
            "off",
            "--users",
            str(exp.load_users),
            "--run-time",
            f"{math.ceil(exp.load_duration_s)}s",  # whole seconds; never shorter than asked
            "--csv",
            str(self.run_dir / "locust"),
            "--csv-full-history",
            "--html",
            str(self.run_dir / "locust.html"),
            "--logfile",
            str(self.run_dir / "locust.log"),
            "--stop-timeout",
            "3",
        ]
        self.load_started = time.time()
        with open(self.run_dir / "locust.out", "wb") as sink:
            self.locust = subprocess.Popen(  # noqa: S603 - Locust with arguments built here
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.journal["load"] = {"argv": runmeta.redact(argv), "started": self.load_started}
        # Ledgered like a fault, so the guardian also stops the load if this runner dies.
        self._load_entry = self.ledger.opened({"action": "load", "pid": self.locust.pid})

    def _wait_load(self) -> None:
        assert self.locust is not None
        deadline = time.monotonic() + self.experiment.load_duration_s + 60
        while self.locust.poll() is None and time.monotonic() < deadline:
            self._progress()
            time.sleep(1)

    def _stop_load(self) -> None:
        if self.locust is not None and getattr(self, "_load_entry", None):
            self._finish_load()
            self.ledger.closed(self._load_entry)
            self._load_entry = None

    def _finish_load(self) -> None:
        if self.locust is not None and self.locust.poll() is None:
            self.locust.send_signal(signal.SIGINT)
            try:
                self.locust.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.locust.kill()
                self.locust.wait(timeout=5)

    # -- method: timed faults ------------------------------------------------------------------
    def _run_method(self) -> None:
        events: list[tuple[float, int, str, int]] = []
        for index, step in enumerate(self.experiment.steps):
            heapq.heappush(events, (step.start_s, index, "apply", index))
            heapq.heappush(events, (step.start_s + step.duration_s, index, "rollback", index))
        opened: dict[int, tuple[str, dict[str, Any], Window]] = {}
        last_progress = 0.0
        while events:
            at, _, what, index = events[0]
            now = time.time() - self.load_started
            if now < at:
                if time.monotonic() - last_progress >= 1:
                    self._progress()
                    last_progress = time.monotonic()
                if self.locust is not None and self.locust.poll() is not None:
                    raise LoadEnded(
                        f"the load ended at {now:.1f}s, before the method finished"
                        f" (Locust exit code {self.locust.returncode}; see locust.out)"
                    )
                time.sleep(min(0.1, at - now))
                continue
            heapq.heappop(events)
            step = self.experiment.steps[index]
            if what == "apply":
                opened[index] = self._apply(step)
            elif index in opened:
                self._undo(*opened.pop(index))

    def _apply(self, step) -> tuple[str, dict[str, Any], Window]:
        window = Window(step.label, step.spec["action"], time.time(), phase=step.phase)
        fault = self.faults.prepare(step.spec)
        entry_id = self.ledger.opened(fault)
        try:
            self.faults.apply(fault)
            self.echo(f"[{window.start - self.load_started:6.1f}s] fault on: {step.label}")
        except Exception as exc:  # noqa: BLE001 - record it; the verdict shows the failed step
            window.error = str(exc)
            self.echo(f"fault {step.label} failed to apply: {exc}")
        self.windows.append(window)
        self.journal["method"].append(
            {
                "label": step.label,
                "fault": _public(fault),
                "start": window.start,
                "error": window.error,
            }
        )
        return entry_id, fault, window

    def _undo(self, entry_id: str, fault: dict[str, Any], window: Window) -> None:
        started = time.time()
        try:
            self.faults.rollback(fault)
            self.ledger.closed(entry_id)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - the guardian and final cleanup retry it
            status = f"failed: {exc}"
        window.end = time.time()
        self.echo(f"[{window.end - self.load_started:6.1f}s] healed: {window.label} ({status})")
        self.journal["rollbacks"].append(
            {"label": window.label, "at": started, "status": status, "result": fault.get("result")}
        )

    def _rollback_all(self) -> None:
        for window in self.windows:
            if window.end is None:
                window.end = time.time()
        rollback_open(self.ledger, self.faults, log=self.echo)

    # -- observation -----------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return self.stack.state["components"]["api"]["url"]

    def _progress(self) -> None:
        self.tail.poll()
        now = time.time()
        active = [w.label for w in self.windows if w.end is None]
        phase = "fault" if active else ("baseline" if not self.windows else "recovery")
        self.readiness.append((now, probes.readiness(self.api_url)))
        self.liveness.append((now, probes.readiness(self.api_url, "/healthz")))
        self._count_broker_duplicates()
        recent = self.tail.window(now - 5)
        backlog = probes.outbox_backlog(self.stack.database_url())
        self.echo(
            f"[{now - self.load_started:6.1f}s] {phase:<8} writes/s={recent['writes'] / 5:6.1f}"
            f" fail={recent['fail']} info={recent['info']} backlog={backlog}"
            f" active={', '.join(active) or '-'}"
        )

    def _count_broker_duplicates(self) -> None:
        url = self.stack.app_url("consumer")
        if url:
            self.broker_duplicates.observe(probes.counter(url, "reco_consumer_duplicates"))

    def _hypothesis(self, when: str) -> bool:
        results = []
        for probe in self.experiment.probes:
            ok, observed = probes.check(
                probe, self.api_url, self.stack.database_url(), self.tail, time.time() - 10
            )
            results.append(
                {"probe": probe.name, "ok": ok, "observed": observed, "tolerance": probe.tolerance}
            )
        self.journal["steady_state"][when] = results
        return all(r["ok"] for r in results)

    def _settle(self, timeout: float) -> bool:
        """Wait (bounded) for the steady state: a previous fault may still be healing."""
        deadline = time.monotonic() + timeout
        while not self._hypothesis("before"):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True

    # -- conclusion: recovery, audit, phases, verdict, journal ----------------------------------
    def _conclude(self) -> int:
        healed_at = max((w.end or 0 for w in self.windows), default=time.time())
        recovery = self._readiness_recovery(healed_at)
        self._hypothesis("after")
        # The stack may carry earlier runs (and earlier negative controls): the audit judges
        # this run's own contribution and keeps the totals for reference.
        history = _history(self.run_dir)
        result = audit(
            self.stack.database_url(),
            self.stack.amqp_url(),
            "reco",
            history=history,
            drain_timeout_s=DRAIN_TIMEOUT_S,
            expected_dlq=self.experiment.expected_dlq,
            before=self.before,
            unacked=lambda: consumer_unacked(self.stack.app_url("consumer")),
        )
        self._count_broker_duplicates()  # after the drain: redeliveries it waited for count
        data = result.to_dict()
        # At least this many (a killed consumer's count since the last sample is gone).
        data["broker_duplicates"] = int(self.broker_duplicates.total)
        data["dlq_matches"] = int(result.dlq_run == self.experiment.expected_dlq)
        data.update(
            # Never ready again within RECOVERY_TIMEOUT_S: no number to judge, a plain "no".
            readiness_recovered=recovery is not None,
            readiness_recovery_s=None if recovery is None else round(recovery, 2),
            **server_health.worker_events(self.api_log),
            idle_in_transaction=server_health.idle_in_transaction(self.stack.database_url()),
            steady_state_after=all(r["ok"] for r in self.journal["steady_state"]["after"]),
            **self._method_outcome(),
            **self._probe_outcome(),
            **_write_refusals(history),
        )
        (self.run_dir / "audit.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        self._write_phases(healed_at, recovery)
        self._write_run_json()
        rules = guardrails.load_rules(self.rules_path)
        verdict = guardrails.check_dir(self.run_dir, rules, profile=self.experiment.load_profile)
        guardrails.write_verdict(verdict, self.run_dir)
        self.echo(verdict.table())
        self._write_journal("completed", verdict.exit_code)
        return verdict.exit_code

    def _method_outcome(self) -> dict[str, int]:
        """Whether the method ran as written: a fault that never applied proves nothing."""
        method, rollbacks = self.journal["method"], self.journal["rollbacks"]
        results = [r["result"] for r in rollbacks if isinstance(r.get("result"), dict)]
        return {
            "fault_errors": sum(1 for step in method if step.get("error")),
            "rollback_failures": sum(1 for r in rollbacks if r["status"] != "ok"),
            # A fault with its own check (concurrent migrations: each file applied once).
            "fault_checks_failed": sum(1 for r in results if r.get("ok") is False),
        }

    def _probe_outcome(self) -> dict[str, int]:
        """Liveness never failing, and readiness seen failing while a fault was on."""

        def during_fault(t: float) -> bool:
            return any(w.start <= t <= (w.end or t) for w in self.windows)

        return {
            "liveness_failures": sum(1 for _, status in self.liveness if status != 200),
            "readiness_flipped": int(
                any(status != 200 for t, status in self.readiness if during_fault(t))
            ),
        }

    def _readiness_recovery(self, healed_at: float) -> float | None:
        """Seconds from the last heal to the first ready probe (sampled each second)."""
        after = [t for t, status in self.readiness if t >= healed_at and status == 200]
        if after:
            return min(after) - healed_at
        if (
            _seconds_until(lambda: probes.readiness(self.api_url) == 200, RECOVERY_TIMEOUT_S)
            is None
        ):
            return None
        return time.time() - healed_at

    def _write_phases(self, healed_at: float, recovery: float | None) -> None:
        path = self.run_dir / "phases.json"
        phases = json.loads(path.read_text()) if path.exists() else {}
        starts = [w.start for w in self.windows]
        end = self.load_started + self.experiment.load_duration_s
        if starts:
            # Timelines are per whole second: keep the second a fault began out of the baseline.
            phases["baseline"] = [self.load_started, max(self.load_started, min(starts) - 1.0)]
            phases["fault"] = [min(starts), healed_at]
            phases["recovery"] = [healed_at, max(end, healed_at)]
            # Whole seconds of load once ready again and settled, if the run lasted that long
            # (scaled-down runs may not): where "recovered" is judged, sheds included.
            if recovery is not None:
                settled = math.ceil(healed_at + recovery + SETTLE_S)
                if end - settled >= 1.0:
                    phases["settled"] = [settled, end]
        for window in self.windows:
            if window.phase:  # whole seconds inside the window: its edges belong to neither side
                phases[window.phase] = [
                    math.ceil(window.start),
                    max(math.ceil(window.start), math.floor(window.end or window.start)),
                ]
        path.write_text(json.dumps(phases, indent=2) + "\n")
        windows = [dataclasses.asdict(w) for w in self.windows]
        (self.run_dir / "faults.json").write_text(json.dumps(windows, indent=2) + "\n")

    def _refused(self, reason: str, hint: str) -> int:
        """Say why, then record a run refused before any load: no verdict, exit 2."""
        self.echo(reason)
        self.echo(hint)
        self._record_unfinished(f"not run: {reason}", "refused")
        return guardrails.EXIT_USAGE

    def _record_interrupted(self) -> None:
        """run.json and the journal of a stopped run: judged again, by its rules, as no pass."""
        self._record_unfinished(INTERRUPTED, "interrupted")

    def _record_unfinished(self, reason: str, status: str = "failed") -> None:
        self._write_run_json([reason])
        # A CI reading only junit.xml must see this run as an error, not as a missing file.
        verdict = guardrails.Verdict(
            guardrails=str(self.rules_path), profile=self.experiment.load_profile, errors=[reason]
        )
        guardrails.write_verdict(verdict, self.run_dir)
        self._write_journal(status)

    def _write_run_json(self, errors: list[str] | None = None) -> None:
        exp = self.experiment
        data = {
            **runmeta.collect(),
            "kind": "chaos",
            "experiment": exp.name,
            "experiment_file": str(exp.path),
            **guardrails.rules_record(self.rules_path),  # `guardrails check` judges by it
            "title": exp.title,
            "profile": exp.load_profile,
            "users": exp.load_users,
            "duration_s": exp.load_duration_s,
            "start": self.load_started,
            "end": time.time(),
        }
        if errors:
            data[guardrails.ERRORS] = errors
        (self.run_dir / "run.json").write_text(json.dumps(data, indent=2, default=str) + "\n")

    def _write_journal(self, status: str, exit_code: int | None = None) -> None:
        self.journal.update(
            status=status, exit_code=exit_code, ended=dt.datetime.now(dt.UTC).isoformat()
        )
        (self.run_dir / "journal.json").write_text(
            json.dumps(self.journal, indent=2, default=str) + "\n"
        )


def _public(fault: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fault.items() if not k.endswith("_url") and k != "state_dir"}


def _history(run_dir: Path) -> list[dict[str, Any]]:
    ops = []
    for path in sorted(run_dir.glob("history*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ops.append(json.loads(line))
    return ops


def _write_refusals(history: list[dict[str, Any]]) -> dict[str, int]:
    """Writes answered 409 (key still in use) or 422 (e.g. event-in-future).

    A load on a healthy stack gets neither: its events are valid, and it reuses a key only to
    replay a completed write or after an unknown outcome.
    """
    statuses = [op.get("status") for op in history if op.get("op") == "write"]
    return {f"writes_{code}_count": statuses.count(code) for code in (409, 422)}


def _seconds_until(probe, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(0.2)
    return None
