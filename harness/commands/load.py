"""`load run`: a Locust profile against the stack, then the audit and the guardrail verdict."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click

from harness import audit as audit_module
from harness import drift, guardrails, pipeline_summary, resources, runmeta, server_health
from harness.guardrails.prometheus import unbounded_thresholds
from harness.guardrails.timeline import Timeline
from harness.pipeline_sampler import PipelineSampler
from harness.ports import free_port
from harness.report import write_report
from harness.stack import Stack, StackError, default_state_dir
from loadtests import options, outputs, shapes
from service.metrics import HISTOGRAM_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
STARTUP_MARGIN_S = 90.0  # Locust start, worker hand-shake, shutdown and final reports
AUDIT_DRAIN_S = 30.0
NO_AUDIT_HINT = "pass --no-audit to run without it"


class AuditUnavailable(Exception):
    """The invariant audit could not run: a harness error (exit 2), never a silent pass."""


class LocustInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during the load: Locust was stopped and exited with ``returncode``."""

    def __init__(self, returncode: int | None):
        super().__init__(returncode)
        self.returncode = returncode


@click.group("load")
def load() -> None:
    """Run Locust load profiles against the stack and gate them with the guardrails."""


@load.command("run")
@click.option(
    "--profile",
    type=click.Choice(sorted(shapes.PROFILES)),
    default="smoke",
    show_default=True,
    help="load shape (see docs/load.md)",
)
@click.option(
    "-u", "--users", type=click.IntRange(min=1), help="peak users (default: the profile's)"
)
@click.option(
    "-t", "--duration", "--run-time", help="run time, e.g. 30s, 5m, 1h (default: the profile's)"
)
@click.option("--user-rps", type=click.FloatRange(min=0.01), help="requests/s per user")
@click.option(
    "--capacity",
    help="overload profile: capacity C (requests/s, or a stress run directory: its knee);"
    " the peak offers 2 C",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Locust worker processes (0: one local process; K: a master and K workers)",
)
@click.option("--out", type=click.Path(file_okay=False), help="run directory (default runs/…)")
@click.option("--url", help="API base URL; without it the local stack is used (started if needed)")
@click.option(
    "--guardrails",
    "guardrails_file",
    type=click.Path(dir_okay=False),
    help="guardrail file (default: guardrails.toml at the repository root)",
)
@click.option("--state-dir", type=click.Path(file_okay=False), help="stack state directory")
@click.option("--no-audit", is_flag=True, help="skip the invariant audit (required with --url)")
@click.option("--locust-arg", "locust_args", multiple=True, help="extra Locust argument, verbatim")
def run(
    profile: str,
    users: int | None,
    duration: str | None,
    user_rps: float | None,
    capacity: str | None,
    workers: int,
    out: str | None,
    url: str | None,
    guardrails_file: str | None,
    state_dir: str | None,
    no_audit: bool,
    locust_args: tuple[str, ...],
) -> int:
    """Run a profile headless; write all outputs to the run dir; exit with the verdict."""
    started_at = time.time()
    rules_path = Path(guardrails_file) if guardrails_file else guardrails.default_path()
    try:
        ruleset = guardrails.load_rules(rules_path)
        seconds = _whole_seconds(duration) if duration else None
        capacity_rps = shapes.capacity_of(capacity) if capacity else None
        shape = shapes.build(profile, users, seconds, user_rps, capacity_rps)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    unsafe = unbounded_thresholds(ruleset.for_profile(profile), HISTOGRAM_BUCKETS)
    if unsafe:
        for problem in unsafe:
            click.echo(f"error: {rules_path}: {problem}", err=True)
        return guardrails.EXIT_USAGE
    if note := options.warmup_note(shape.duration, ruleset.settings.warmup_s):
        click.echo(f"warning: {note}", err=True)
    if url is not None and not no_audit:
        click.echo(
            "error: the invariant audit needs the local stack's database and broker, which "
            f"--url does not give; {NO_AUDIT_HINT}",
            err=True,
        )
        return guardrails.EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(out or ROOT / "runs" / f"{stamp}-{profile}").resolve()
    if run_dir.exists() and any(run_dir.glob("history*.jsonl")):
        click.echo(f"error: {run_dir} holds an earlier run; choose another --out", err=True)
        return guardrails.EXIT_USAGE
    run_dir.mkdir(parents=True, exist_ok=True)

    stack, started_stack = None, False
    audit_error = None
    try:
        if url is None:
            stack = Stack(Path(state_dir) if state_dir else default_state_dir())
            url, started_stack = _ensure_stack(stack)
        baseline = _earlier(stack) if stack and not no_audit else None
        argv = _locust_argv(url, profile, run_dir, rules_path, users, seconds, user_rps, workers)
        if capacity_rps is not None:
            argv += ["--capacity", repr(capacity_rps)]
        argv += list(locust_args)
        click.echo(f"load: {profile} against {url} -> {run_dir}")
        sampler = _start_sampler(stack, run_dir) if stack else None
        api_log = server_health.mark(_api_log(stack))
        interrupted = False
        try:
            locust_rc = _run_locust(argv, run_dir, shape.duration + STARTUP_MARGIN_S)
        except LocustInterrupted as exc:
            # Locust ended its shape and wrote its outputs: say what ran instead of "aborted"
            # (the audit's drain is skipped: whoever pressed Ctrl-C wants out).
            click.echo("interrupted: judging what ran (no audit)", err=True)
            interrupted, locust_rc = True, guardrails.EXIT_USAGE  # killed, or no pass
            if exc.returncode in (guardrails.EXIT_BREACH, guardrails.EXIT_INVARIANT):
                locust_rc = exc.returncode
        finally:
            if sampler is not None:
                sampler.stop()
        _summarise_run(run_dir, stack if sampler is not None else None, api_log)
        audit_note = None
        if stack is not None and baseline is not None and not interrupted:
            try:
                audit_note = _audit(stack, run_dir, baseline)
            except AuditUnavailable as exc:
                audit_error = str(exc)
    except AuditUnavailable as exc:  # before the run: no load spent on an unjudgeable run
        click.echo(f"error: {exc}; {NO_AUDIT_HINT}", err=True)
        return guardrails.EXIT_USAGE
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    finally:
        if started_stack and stack is not None:
            stack.down(log=lambda _m: None)
    if audit_note:
        click.echo(audit_note)
    # Without the local stack there is no pipeline, resources, drift or audit data: those
    # rules are out of this run's scope (recorded, so `guardrails check` judges it the same).
    out_of_scope = outputs.LOAD_RUN_SOURCES if stack is None else frozenset()
    _write_run_json(
        run_dir, argv, profile, url, workers, started_at, locust_rc, started_stack, rules_path,
        out_of_scope,
    )  # fmt: skip
    if not (run_dir / "timeline.jsonl").exists():
        click.echo(f"error: Locust wrote no timeline (exit {locust_rc}); see {run_dir}/locust.log",
                   err=True)  # fmt: skip
        _echo_tail(run_dir / "locust.out")
        return guardrails.EXIT_USAGE
    try:
        verdict = guardrails.check_dir(run_dir, ruleset, profile=profile)
    except guardrails.GuardrailError as exc:
        click.echo(f"error: {exc}", err=True)
        return guardrails.EXIT_USAGE
    summary = json.loads((run_dir / "summary.json").read_text())
    errors = _harness_errors(verdict, locust_rc, audit_error)
    if errors:
        verdict.errors.extend(errors)
        _record_errors(run_dir, errors)  # so that `guardrails check` here says the same
    unjudged = guardrails.unjudged(verdict)
    if unjudged:  # as `guardrails check` on this directory would say: a gate on nothing
        verdict.errors.append(unjudged)
    guardrails.write_verdict(verdict, run_dir)
    click.echo(f"report: {write_report(run_dir)}")
    click.echo(verdict.table())
    _echo_notes(summary, run_dir)
    if locust_rc == guardrails.EXIT_USAGE and verdict.exit_code != guardrails.EXIT_INVARIANT:
        click.echo("error: Locust reported a harness error (see locust.log)", err=True)
    if audit_error:
        click.echo(f"error: {audit_error}; no verdict without it ({NO_AUDIT_HINT})", err=True)
    return verdict.exit_code


@load.command("options")
def locust_options() -> int:
    """Print Locust's options with the locustfile's own (`locust -f … --help` omits them)."""
    # A process of its own: Locust monkey-patches with gevent as it is imported.
    return subprocess.run(  # noqa: S603 - our interpreter and module
        [sys.executable, "-m", "loadtests.cli_help"], cwd=ROOT, timeout=60, check=False
    ).returncode


def _harness_errors(
    verdict: guardrails.Verdict, locust_rc: int, audit_error: str | None
) -> list[str]:
    """What denies the run a verdict beyond what Locust recorded: its exit 2, the audit."""
    errors = []
    if locust_rc == guardrails.EXIT_USAGE and verdict.exit_code in (0, guardrails.EXIT_BREACH):
        errors.append("Locust exited 2: a harness error (see locust.log)")
    if audit_error:
        errors.append(f"{audit_error}: no verdict without the audit")
    return errors


def _record_errors(run_dir: Path, errors: list[str]) -> None:
    path = run_dir / "run.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data[guardrails.ERRORS] = errors
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _whole_seconds(duration: str) -> int:
    """The run time in whole seconds, rounded up (Locust's --run-time takes whole seconds)."""
    seconds = guardrails.parse_duration(duration)
    if seconds < 1:
        raise ValueError(f"--duration {duration!r}: a run lasts at least 1s")
    return math.ceil(seconds)


def _ensure_stack(stack: Stack) -> tuple[str, bool]:
    """Reuse a ready stack, else start one; return the API URL and whether we started it."""
    rows = {r["name"]: r for r in stack.status()}
    if rows.get("api", {}).get("state") == "ready":
        return rows["api"]["url"], False
    had_anything = any(r.get("state") in ("ready", "running") for r in rows.values())
    click.echo(f"starting the stack in {stack.state_dir} …")
    try:
        stack.up(log=click.echo)
    except BaseException:
        if not had_anything:  # a start that failed part way leaves nothing of ours behind
            stack.down(log=lambda _m: None)
        raise
    api = stack.state.get("components", {}).get("api")
    if not api:
        raise StackError("the stack has no API component (service.wsgi not importable?)")
    return api["url"], not had_anything


def _locust_argv(url, profile, run_dir, rules_path, users, seconds, user_rps, workers) -> list[str]:
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", url, "--profile", profile, "--run-dir", str(run_dir),
        "--guardrails", str(rules_path),
        "--csv", str(run_dir / "locust"), "--csv-full-history",
        "--html", str(run_dir / "report.html"),
        "--json-file", str(run_dir / "locust_stats"),  # final stats (the CSVs lag up to 1 s)
        "--logfile", str(run_dir / "locust.log"), "--loglevel", "INFO",
        "--stop-timeout", "3",  # let in-flight writes finish so the history knows their outcome
    ]  # fmt: skip
    if users:
        argv += ["--users", str(users)]
    if seconds:
        argv += ["--run-time", f"{seconds}s"]
    if user_rps:
        argv += ["--user-rps", str(user_rps)]
    if workers:
        # Locust's master binds every interface on 5557 unless told otherwise: a second run
        # with workers failed to bind, and its workers joined the first run's master (they
        # load its target and count in its verdict). A free loopback port keeps each run apart.
        port = str(free_port())
        argv += ["--processes", str(workers), "--master-bind-host", "127.0.0.1",
                 "--master-bind-port", port, "--master-port", port]  # fmt: skip
    return argv


def _run_locust(argv: list[str], run_dir: Path, timeout_s: float) -> int:
    """Run Locust in its own process group, bounded in time; return its exit code."""
    with open(run_dir / "locust.out", "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            argv, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            click.echo(f"error: Locust still running after {timeout_s:.0f}s; stopping it", err=True)
            _stop_locust(proc)
            return guardrails.EXIT_USAGE
        except KeyboardInterrupt:
            _stop_locust(proc)  # passed on: Locust ends the shape, writes and judges what ran
            raise LocustInterrupted(proc.returncode) from None
        except BaseException:
            # Ctrl-C or SIGTERM reached only us: Locust has a session of its own and would go
            # on loading a stack we are about to stop (and write into this run directory).
            _stop_locust(proc)
            raise


def _stop_locust(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGINT Locust (it ends the shape, writes its outputs, quits); SIGKILL if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)  # the master; it stops its own workers
    try:
        proc.wait(timeout=grace_s)
        return
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # stuck, or a second Ctrl-C
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def _start_sampler(stack: Stack, run_dir: Path) -> PipelineSampler | None:
    """Sample backlog, queues and the stack's process trees once a second during the run."""
    try:
        database_url, amqp_url = stack.database_url(), stack.amqp_url()
    except (KeyError, StackError):
        return None
    namespace = os.environ.get("RECO_AMQP_NAMESPACE", "reco")
    return PipelineSampler(
        database_url,
        amqp_url,
        namespace,
        run_dir / "pipeline.jsonl",
        processes=resources.stack_roots(stack),
    ).start()


def _api_log(stack: Stack | None) -> str | None:
    return stack.state.get("components", {}).get("api", {}).get("log") if stack else None


def _summarise_run(run_dir: Path, stack: Stack | None, api_log: server_health.LogMark) -> None:
    """drift.json (late p99 against early); with the stack's samples, resources and pipeline."""
    import psycopg2

    phases = {}
    with contextlib.suppress(OSError, ValueError):
        raw = json.loads((run_dir / "phases.json").read_text(encoding="utf-8"))
        phases = {k: (float(v[0]), float(v[1])) for k, v in raw.items()}
    with contextlib.suppress(OSError, ValueError, KeyError):
        timeline = Timeline.read_jsonl(run_dir / "timeline.jsonl")
        _write_json(run_dir / "drift.json", drift.summarise(timeline, phases))
    if stack is None:
        return
    samples = []
    with contextlib.suppress(OSError), open(run_dir / "pipeline.jsonl", encoding="utf-8") as fh:
        samples = [json.loads(line) for line in fh if line.strip()]
    summary = resources.summarise(samples, phases)
    summary.update(server_health.worker_events(api_log))  # logged during the run
    with contextlib.suppress(psycopg2.Error, KeyError, StackError):
        summary["idle_in_transaction"] = server_health.idle_in_transaction(stack.database_url())
    _write_json(run_dir / "resources.json", summary)
    window = pipeline_summary.window_of(phases, samples)
    e2e = None
    if window is not None:
        with contextlib.suppress(psycopg2.Error, KeyError, StackError):
            e2e = pipeline_summary.e2e_latency(stack.database_url(), window)
    _write_json(run_dir / "pipeline.json", pipeline_summary.summarise(samples, window, e2e))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _audit_errors(what: str) -> Iterator[None]:
    """Turn the database's or broker's failure into AuditUnavailable (exit 2, never a pass)."""
    import pika.exceptions
    import psycopg2

    try:
        yield
    except (psycopg2.Error, pika.exceptions.AMQPError, OSError, KeyError, StackError) as exc:
        raise AuditUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None


def _earlier(stack: Stack) -> audit_module.Earlier:
    """What the stack holds before the run: earlier runs' events and effects are not this run's."""
    components = stack.state.get("components", {})
    missing = {"relay", "consumer"} - set(components)
    if missing:
        raise AuditUnavailable(
            f"the audit cannot run: no {' or '.join(sorted(missing))} in the stack at "
            f"{stack.state_dir}"
        )
    with _audit_errors("the audit cannot read the stack's database or broker before the run"):
        return audit_module.earlier(
            stack.database_url(), stack.amqp_url(), os.environ.get("RECO_AMQP_NAMESPACE", "reco")
        )


def _audit(stack: Stack, run_dir: Path, baseline: audit_module.Earlier) -> str:
    """Reconcile the history with the database once the pipeline drained; write audit.json."""
    history: list[dict] = []
    for path in sorted(run_dir.glob("history*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            history.extend(json.loads(line) for line in fh if line.strip())
    # Earlier runs' events and effects are not this run's business (see harness.audit.Earlier).
    consumer_url = stack.app_url("consumer")
    with _audit_errors("the audit could not reconcile the run"):
        result = audit_module.audit(
            stack.database_url(), stack.amqp_url(), os.environ.get("RECO_AMQP_NAMESPACE", "reco"),
            history=history, drain_timeout_s=AUDIT_DRAIN_S, before=baseline,
            unacked=lambda: audit_module.consumer_unacked(consumer_url),
        )  # fmt: skip
    data = result.to_dict()
    data.update(preexisting_events=len(baseline.event_ids), history_ops=len(history))
    (run_dir / "audit.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    state = "ok" if result.ok else "; ".join(result.violations())
    return f"audit: {len(history)} writes reconciled in {result.drain_seconds}s: {state}"


def _write_run_json(
    run_dir, argv, profile, url, workers, started_at, locust_rc, started_stack, rules_path,
    out_of_scope,
):  # fmt: skip
    data = {
        **runmeta.collect(),  # command (redacted), commit, versions, machine
        "locust_command": runmeta.redact(argv),
        "profile": profile,
        "url": runmeta.redact([url])[0] if url else url,
        guardrails.JUDGED_WITHOUT: sorted(out_of_scope),
        "workers": workers,
        "started_stack": started_stack,
        "start": started_at,
        "end": time.time(),
        "locust_exit_code": locust_rc,
        **guardrails.rules_record(rules_path),  # `guardrails check` judges by it again
    }
    (run_dir / "run.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _echo_notes(summary: dict, run_dir: Path) -> None:
    with contextlib.suppress(OSError):  # what Locust ignored or left out, as plain Locust says
        for note in outputs.logged_notes((run_dir / "locust.log").read_text(errors="replace")):
            click.echo(f"warning: {note}")
    sat = summary.get("saturation") or {}
    if sat.get("saturated"):
        click.echo(
            f"warning: generator saturated - achieved {sat['achieved_rps']} rps vs offered "
            f"{sat['offered_rps']} rps for {sat['saturated_s']} s ({sat['reason']})"
        )
    if summary.get("knee"):
        click.echo(f"stress knee: {json.dumps(summary['knee'])}")
    click.echo(f"outputs: {run_dir}")


def _echo_tail(path: Path, lines: int = 30) -> None:
    if path.exists():
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            click.echo(f"  {line}", err=True)


command = load
