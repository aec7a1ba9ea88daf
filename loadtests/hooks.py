"""Locust event hooks: custom arguments, the per-second timeline, server scrapes and the gate."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from harness import guardrails
from harness.guardrails.prometheus import Scrapes, Snapshot, parse
from harness.guardrails.sources import LocustSource, ServerSource
from harness.ports import free_port
from loadtests import options, outputs, retrybudget, shapes, workload
from loadtests.runstate import STATE

log = logging.getLogger("reco.load")
# What the user asked for that the run ignores or cannot judge; `load run` repeats these.
notes = logging.getLogger(outputs.NOTES_LOGGER)
SCRAPE_INTERVAL_S = 5.0
ABORT_INTERVAL_S = 2.0
TIMELINE_KEY = "reco_timeline"
CPU_KEY = "reco_cpu_percent"
_greenlets: list[gevent.Greenlet] = []
_worker_cpu: dict[str, float] = {}


def report_lag_s() -> float:
    """How late per-second data reaches this process (workers report every 3 s)."""
    return 4.0 if STATE.distributed else 1.5


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    """Our options, shown in the web UI too; workers receive the master's values.

    The profile is Locust's own ``--profile`` (it labels the run in the HTML report and the
    web UI); RECO_LOAD_PROFILE is its fallback.
    """
    for action in parser._actions:  # argparse has no public way to reword an option's help
        if action.dest == "profile":
            action.help = (
                f"load profile: {', '.join(shapes.PROFILES)} (default: "
                f"${options.ENV_VARS['profile']}, else {shapes.DEFAULT_PROFILE}); it also labels"
                " the run in Locust's report"
            )
    parser.add_argument(
        "--run-dir", default="", env_var=options.ENV_VARS["run_dir"],
        help="where timeline, history, summary and verdict go (default runs/<time>-<profile>)",
    )  # fmt: skip
    parser.add_argument(
        "--guardrails", default="", env_var=options.ENV_VARS["guardrails"],
        help="guardrail TOML file (default: guardrails.toml at the repo root; 'off' to skip)",
    )  # fmt: skip
    parser.add_argument(
        "--user-rps", type=float, default=0.0, env_var=options.ENV_VARS["user_rps"],
        help="requests per second per user (constant throughput); 0 = the profile's default",
    )  # fmt: skip
    parser.add_argument(
        "--api-key", default="dev-key", env_var=options.ENV_VARS["api_key"], is_secret=True,
        help="X-API-Key sent with every request",
    )  # fmt: skip
    parser.add_argument(
        "--request-timeout", type=float, default=5.0,
        help="network timeout per request in seconds (connect timeout is at most 2 s)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-url", default="",
        help="Prometheus endpoint to scrape (default: <host>/metrics; 'off' to skip)",
    )  # fmt: skip
    parser.add_argument(
        "--capacity", default="", env_var=options.ENV_VARS["capacity"],
        help="overload profile: capacity C in requests/s, or a stress run directory (its knee);"
        " the peak offers 2 C (default: half of -u x --user-rps)",
    )  # fmt: skip
    parser.add_argument(
        "--replay-ratio", type=float, default=0.05,
        help="share of writes that deliberately resend the previous request (same key)",
    )  # fmt: skip
    parser.add_argument(
        "--retry-budget", type=float, default=retrybudget.DEFAULT_RATIO,
        help="retries this process may add per first attempt over 10 s (0: only --retry-floor)",
    )  # fmt: skip
    parser.add_argument(
        "--retry-floor", type=float, default=retrybudget.DEFAULT_FLOOR_PER_S,
        help="retries per second this process may always send, budget or not (0: none)",
    )  # fmt: skip


@events.init_command_line_parser.add_listener
def master_on_loopback(parser) -> None:
    """The master listens on loopback (and on a free port under --processes) unless told.

    Locust's defaults are every interface and port 5557. Locust reads the command line, its
    LOCUST_ variables and a config file all as arguments, so a default loses to each. The
    ports are settled as soon as the options are parsed: --processes forks the workers that
    connect to them right after, before any other hook runs.
    """
    parser.set_defaults(master_bind_host="127.0.0.1", master_bind_port=None, master_port=None)
    parse = parser.parse_known_args

    def parse_known_args(*args, **kwargs):
        opts, rest = parse(*args, **kwargs)
        options.master_ports(opts, free_port)
        return opts, rest

    parser.parse_known_args = parse_known_args


@events.init.add_listener
def on_init(environment, runner=None, web_ui=None, **_kw) -> None:
    """Resolve options once per process; the master/local process also loads the guardrails."""
    opts = environment.parsed_options
    if opts is None:
        return
    opts.profile = opts.profile or _default_profile()
    try:
        shapes.profile_named(opts.profile)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(guardrails.EXIT_USAGE)
    environment.profile = opts.profile
    if opts.capacity:
        try:
            shapes.capacity_of(opts.capacity)
        except ValueError as exc:
            sys.stderr.write(f"error: --capacity: {exc}\n")
            sys.exit(guardrails.EXIT_USAGE)
    # Headless Locust later defaults -u to 1; remember whether it was given at all.
    STATE.users_override = opts.num_users
    if opts.run_dir:  # else each test gets its own runs/<time>-<profile> (begin_shape)
        opts.run_dir = str(Path(opts.run_dir).resolve())
    _apply_options(opts)
    STATE.distributed = isinstance(runner, MasterRunner | WorkerRunner)
    if isinstance(runner, MasterRunner):  # where this run's workers connect
        log.info("master listening on %s:%s", opts.master_bind_host, opts.master_bind_port)
    if isinstance(runner, WorkerRunner):
        _report_before_leaving_on_sigint(runner)
        return
    _refuse_bad_numbers(opts)
    if web_ui is not None:
        _refuse_bad_start_forms(web_ui, opts)
    if opts.headless and environment.shape_class is not None:
        _end_shape_on_signals(runner)
    try:
        _load_rules(opts.guardrails)
    except guardrails.GuardrailError as exc:
        log.error("guardrails: %s", exc)
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(guardrails.EXIT_USAGE)


def _load_rules(name: str) -> None:
    """Load the guardrail file ``name`` names ('' the default, 'off' none), once per file.

    The web UI's form may name another file for its next test: it judges that test.
    """
    wanted = name or str(guardrails.default_path())
    if wanted != STATE.rules_from:
        STATE.ruleset = None if wanted.lower() == "off" else guardrails.load_rules(wanted)
        STATE.rules_from = wanted


def _default_profile() -> str:
    return os.environ.get(options.ENV_VARS["profile"]) or shapes.DEFAULT_PROFILE


def _refuse_bad_numbers(opts) -> None:
    """Exit 2, naming each, on option values Locust takes but a run cannot use.

    Options it takes that a profile run ignores are named too (a warning each).
    """
    warnings, refused = options.ignored(opts, os.environ)
    for warning in warnings:
        notes.warning("%s", warning)
    problems = options.usage_problems(opts) + refused
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    if problems:
        sys.exit(guardrails.EXIT_USAGE)


def _refuse_bad_start_forms(web_ui, opts) -> None:
    """Answer a start form the run cannot use with the page's own refusal, naming each value."""
    from flask import jsonify, request

    def check():
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        picker = web_ui.userclass_picker_is_active
        problems = options.swarm_problems(request.form, opts, picker)
        rules = request.form.get("guardrails") or ""
        if rules and rules.lower() != "off":
            try:
                guardrails.load_rules(rules)
            except guardrails.GuardrailError as exc:
                problems.append(f"guardrails: {exc}")
        if not problems:
            return None
        log.error("web UI: not started: %s", "; ".join(problems))
        return jsonify({"success": False, "message": "; ".join(problems), "host": opts.host})

    web_ui.app.before_request(check)


def _report_before_leaving_on_sigint(runner) -> None:
    """On SIGINT a worker sends its last stats report, then leaves.

    Ctrl-C reaches a ``--processes`` master and its forked workers alike (one process group).
    Left to Python, a worker died at once and the requests of its last report interval were
    never counted, so the master's partial run missed them (and judged too few requests).
    The report is the one a master's "quit" would have asked for.
    """

    def leave() -> None:
        log.warning("SIGINT: this worker sends its last report and leaves")
        runner.stop()
        runner._send_stats()  # noqa: SLF001 - what WorkerRunner does on the master's "quit"
        runner.quit()

    gevent.signal_handler(signal.SIGINT, leave)


def _end_shape_on_signals(runner) -> None:
    """SIGTERM or SIGINT end a headless shape run as its last stage would: outputs, verdict, exit.

    Headless Locust waits for the shape greenlet before it installs its own SIGTERM handler,
    so until the shape ends a SIGTERM (a CI timeout, a supervisor) killed it with no outputs;
    SIGINT raised KeyboardInterrupt wherever the interpreter was. Ending the shape greenlet
    from the hub takes Locust's normal path out instead.
    """

    def handler(signame: str):
        def end() -> None:
            if STATE.interrupted is None:
                STATE.interrupted = signame
                log.warning("%s: ending the run early; outputs and verdict follow", signame)
            greenlet = getattr(runner, "shape_greenlet", None)
            if greenlet is not None:
                greenlet.kill(block=False)

        return end

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, handler(sig.name))


def _apply_options(opts) -> None:
    from loadtests.users import RecoUser

    RecoUser.network_timeout = float(opts.request_timeout)
    RecoUser.connection_timeout = min(2.0, float(opts.request_timeout))
    STATE.profile = opts.profile
    # 0 (the default) is the profile's rate; kept as given, as the web UI may change profile.
    STATE.user_rps = float(opts.user_rps or shapes.PROFILES[opts.profile].user_rps)
    STATE.api_key = opts.api_key
    STATE.replay_ratio = float(opts.replay_ratio)
    # One budget per process and test, shared by its users as a client library's would be.
    # Values it cannot take are refused (exit 2) once the options are read, not here.
    if not options.retry_problems(opts):
        ratio, floor = float(opts.retry_budget), float(opts.retry_floor)
        STATE.retry_budget = retrybudget.RetryBudget(ratio, floor)
    # No proxy stamps arrival times on the local stack; overload stamps them as one would, so
    # the service sees the listen-backlog wait and sheds (RECO_MAX_QUEUE_MS).
    STATE.request_start = opts.profile == "overload"
    if opts.run_dir:
        STATE.run_dir = Path(opts.run_dir)
    host = (opts.host or "").rstrip("/")
    if opts.metrics_url.lower() == "off":
        STATE.metrics_url = None
    else:
        STATE.metrics_url = opts.metrics_url or (f"{host}/metrics" if host else None)


def begin_shape(runner) -> None:
    """Build the profile's shape from the options (peak users -u, duration -t) and start."""
    opts = runner.environment.parsed_options
    if runner.environment.profile in shapes.PROFILES:  # the web UI may have changed it
        opts.profile = runner.environment.profile
    elif opts.profile not in shapes.PROFILES:  # the web UI's profile field left empty
        opts.profile = runner.environment.profile = _default_profile()
    opts.run_dir = _test_run_dir(opts)  # absolute: workers receive it with their spawn message
    _apply_options(opts)
    try:
        _load_rules(opts.guardrails)
    except guardrails.GuardrailError as exc:  # the file changed since the form was checked
        log.error("guardrails: %s; judging by %s", exc, STATE.rules_from)
    users = options.peak_users(opts, STATE.users_override)
    overload = opts.capacity and opts.profile == "overload"
    capacity = shapes.capacity_of(opts.capacity) if overload else None
    shape = shapes.build(
        opts.profile, users or None, opts.run_time or None, STATE.user_rps, capacity
    )
    if isinstance(shape, shapes.StressShape) and STATE.ruleset is not None:
        slo = STATE.ruleset.slo
        shape.p99_ms, shape.error_ratio, shape.throughput_ratio = (
            slo.p99_ms, slo.error_ratio, slo.throughput_ratio,
        )  # fmt: skip
    STATE.begin(shape)
    STATE.run_dir.mkdir(parents=True, exist_ok=True)
    (STATE.run_dir / "server_metrics.jsonl").unlink(missing_ok=True)
    # A reused run directory (or the web UI's next test): earlier histories are not this
    # test's operations. Users start after this first tick, so nothing of ours is lost.
    for path in STATE.run_dir.glob("history*.jsonl"):
        path.unlink(missing_ok=True)
    if isinstance(shape, shapes.StressShape):
        peak = shape.max_users
    else:
        peak = max(s.users for s in shape.stages)
    log.info(
        "profile %s: %s users x %.2f rps for %.0f s -> %s",
        opts.profile, peak, STATE.user_rps, shape.duration, STATE.run_dir,
    )  # fmt: skip
    warmup = STATE.ruleset.settings.warmup_s if STATE.ruleset else 0.0
    if note := options.warmup_note(shape.duration, warmup):
        log.warning("%s", note)
    if note := _mix_note(runner.environment.user_classes, peak):
        notes.warning("%s", note)


def _mix_note(user_classes, peak: int) -> str | None:
    """The classes (of those chosen) that a peak this small gives no user, if any."""
    try:  # the order Locust's dispatcher hands weighted users out in
        from locust.dispatch import _kl_generator
    except ImportError:  # pragma: no cover - a Locust without it: no note rather than a guess
        return None
    weighted = [u for u in user_classes if not u.fixed_count and u.weight > 0]
    order = _kl_generator((u.__name__, u.weight) for u in weighted)
    return options.mix_note(order, {u.__name__ for u in weighted}, peak)


def _test_run_dir(opts) -> str:
    """This test's run directory: as given, else a fresh runs/<time>-<profile> for each test.

    The web UI's form sends its run-dir field empty unless one was typed: that used to make
    the current directory the run directory (outputs written there, its histories deleted).
    Without a given directory each test gets its own, so a next test overwrites nothing.
    """
    if opts.run_dir and opts.run_dir != STATE.default_run_dir:
        return str(Path(opts.run_dir).resolve())
    # A master begins the same test twice (its first spawn resets the shape's clock again).
    if STATE.default_run_dir is None or STATE.stopping:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        STATE.default_run_dir = str(options.unused_dir(Path("runs") / f"{stamp}-{opts.profile}"))
    return STATE.default_run_dir


def observe_stress(run_time: float) -> None:
    """Judge finished stress steps against the SLO (data may arrive a few seconds late)."""
    shape = STATE.shape
    if not isinstance(shape, shapes.StressShape) or STATE.t0 is None:
        return
    while (step := shape.due(run_time, report_lag_s())) is not None:
        a, b = shape.judge_window(step)
        win = STATE.timeline.window(STATE.t0 + a, STATE.t0 + b)
        total = win.total()
        n = total.hist.n
        result = shapes.Step(
            step=step,
            users=shape.users_at(step),
            offered_rps=win.offered / win.duration,
            achieved_rps=n / win.duration,
            p99_ms=total.hist.percentile(99),
            error_ratio=(total.fail + total.shed) / n if n else 1.0,
        )
        held = shape.observe(result)
        log.info("stress step %d: %s -> %s", step + 1, result, "held" if held else shape.reason)
        if not held:
            return


@events.reset_stats.add_listener
def on_reset_stats(**_kw) -> None:
    """The web UI's "Reset stats": say what it leaves alone."""
    log.warning("%s", options.RESET_STATS.replace("--reset-stats resets", "resetting resets"))


@events.request.add_listener
def on_request(
    request_type, name, response_time, response=None, exception=None, context=None, **_kw
) -> None:
    """Count every request in this process's per-second timeline (sheds apart from errors)."""
    outcome = "ok"
    if exception is not None:
        status = getattr(response, "status_code", 0) or 0
        headers = getattr(response, "headers", None)
        retry_after = headers.get("Retry-After") if headers else None
        outcome = "shed" if workload.is_shed(status, retry_after) else "fail"
    retry = bool((context or {}).get("retry"))  # set by the users on every retry they send
    STATE.timeline.record(
        time.time(), f"{request_type} {name}", response_time or 0.0, outcome, retry=retry
    )


@events.report_to_master.add_listener
def on_report_to_master(client_id, data) -> None:
    """Ship everything recorded since the last report; the master adds partial seconds up."""
    # Same report as Locust's own stats, so the timeline is exactly as complete as they are.
    data[TIMELINE_KEY] = STATE.timeline.pop_rows()
    data[CPU_KEY] = STATE.process().cpu_percent()  # since the last report (Locust: every 10 s)


@events.worker_report.add_listener
def on_worker_report(client_id, data) -> None:
    STATE.timeline.merge_rows(data.get(TIMELINE_KEY, []))
    if CPU_KEY in data:
        _worker_cpu[client_id] = float(data[CPU_KEY])


@events.test_start.add_listener
def on_test_start(environment, **_kw) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # The master's options arrived with the spawn message; they win over our own.
        _apply_options(environment.parsed_options)
        STATE.worker = str(runner.worker_index if runner.worker_index >= 0 else runner.client_id)
        STATE.close_history()
        STATE._history = None
        STATE.timeline = type(STATE.timeline)()
        STATE.stopping = False
        STATE.process().cpu_percent()  # this worker's own process, created after the fork
        return
    _kill_greenlets()
    _greenlets.extend(
        gevent.spawn(loop) for loop in (_sample_loop(runner), _scrape_loop(), _abort_loop(runner))
    )


@events.test_stopping.add_listener
def on_test_stopping(environment, **_kw) -> None:
    _note_cut_short(environment.runner, "a stop before the profile ended")


def _note_cut_short(runner, how: str) -> None:
    """A test stopped while its shape still ran is partial: never a pass (exit 2).

    Headless runs learn it from their signal handlers; a web UI test stopped from the page, or
    its process told to quit (SIGTERM) mid-test, was judged as a whole run and could pass.
    """
    if runner is None or isinstance(runner, WorkerRunner) or STATE.t0 is None:
        return
    if STATE.stopping or STATE.interrupted or STATE.aborted:
        return
    greenlet = getattr(runner, "shape_greenlet", None)
    if greenlet is None or greenlet.dead or greenlet is gevent.getcurrent():
        return  # no shape running, or the shape itself ending the test
    STATE.interrupted = how
    log.warning("%s: a partial run is not a pass; outputs and verdict follow", how)


@events.test_stop.add_listener
def on_test_stop(environment, **_kw) -> None:
    STATE.stopping = True
    opts = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or opts is None or opts.headless:
        return  # headless: the master writes once every worker's last report is in (quitting)
    _finish(environment)


@events.quitting.add_listener
def on_quitting(environment, **_kw) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        STATE.stopping = True
        STATE.close_history()
        return
    _note_cut_short(environment.runner, "Locust quitting before the profile ended")
    STATE.stopping = True
    _finish(environment, gate=True)


def _finish(environment, gate: bool = False) -> None:
    """Write every output, judge the run and (when quitting) set Locust's exit code."""
    _kill_greenlets()
    STATE.close_history()
    if STATE.t0 is None:
        return
    scrape()
    warmup = STATE.ruleset.settings.warmup_s if STATE.ruleset else 0.0
    runner = environment.runner
    scrape_error = outputs.scrape_error(STATE)
    exceptions = outputs.exceptions_error(len(runner.exceptions) if runner is not None else 0)
    errors = [e for e in (scrape_error, exceptions) if e]
    summary = outputs.write_outputs(STATE, warmup, errors)
    if message := outputs.saturation_message(summary):
        log.warning(message)
    if summary.get("knee"):
        log.info("stress knee: %s", json.dumps(summary["knee"]))
    verdict = outputs.judge(STATE)
    if verdict is None:
        return
    # --json makes stdout Locust's final stats document: the table must not break it.
    console = sys.stderr if getattr(environment.parsed_options, "json", False) else sys.stdout
    console.write("\n" + verdict.table() + "\n")
    log.info(
        "guardrails: judged on the client timeline and the server's metrics; the %s rules are"
        " judged by `reco-harness load run` on the local stack",
        ", ".join(sorted(outputs.LOAD_RUN_SOURCES)),
    )
    for error in errors:
        log.error("%s", error)
    if STATE.interrupted:
        log.error("interrupted by %s: a partial run is not a pass", STATE.interrupted)
    if gate:
        # The written verdict holds the errors and the interruption (summary.json): its exit
        # code is the one `guardrails check` on this directory gives.
        environment.process_exit_code = verdict.exit_code


def _kill_greenlets() -> None:
    while _greenlets:
        _greenlets.pop().kill(block=False)


def _sample_loop(runner):
    def loop() -> None:
        # Our own per-second CPU reading: Locust's monitor samples only every 10 s.
        STATE.process().cpu_percent()
        while True:
            gevent.sleep(1.0 - time.time() % 1.0 + 0.01)
            second = time.time() - 1.0  # the second that just ended
            users = runner.user_count
            cpu = STATE.process().cpu_percent()
            if isinstance(runner, MasterRunner):  # the generators are the workers
                cpu = max([0.0, *_worker_cpu.values()])
            STATE.timeline.set_meta(
                second, users=users, offered_rps=round(users * STATE.user_rps, 3), cpu=round(cpu, 1)
            )

    return loop


def scrape() -> None:
    """Take one snapshot of the service's histograms and append it to server_metrics.jsonl."""
    if not STATE.metrics_url:
        return
    try:
        with urllib.request.urlopen(STATE.metrics_url, timeout=2.0) as resp:  # noqa: S310
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        STATE.scrape_failures += 1
        log.warning("metrics scrape of %s failed: %s", STATE.metrics_url, exc)
        return
    snapshot = Snapshot(time.time(), parse(text))
    STATE.scrapes.append(snapshot)
    with open(STATE.run_dir / "server_metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(snapshot.to_dict(), separators=(",", ":")) + "\n")


def next_scrape_in(now: float, edges: list[float], interval: float = SCRAPE_INTERVAL_S) -> float:
    """Seconds to the next scrape: the interval, or less to land on the next window edge.

    A server-side window is the difference of the scrapes around it: one on each edge keeps
    the warm-up out of `run` and one phase's requests out of the next.
    """
    return min([interval, *(edge - now for edge in edges if edge - now > 0.05)])


def _scrape_loop():
    def loop() -> None:
        warmup = STATE.ruleset.settings.warmup_s if STATE.ruleset else 0.0
        while True:
            scrape()
            gevent.sleep(next_scrape_in(time.time(), STATE.window_edges(warmup)))

    return loop


def _abort_loop(runner):
    """Stop the run early when an abort_on_fail rule breaches (k6's abortOnFail)."""

    def loop() -> None:
        ruleset = STATE.ruleset
        rules = (
            [r for r in ruleset.for_profile(STATE.profile) if r.abort_on_fail] if ruleset else []
        )
        if not rules:
            return
        while True:
            gevent.sleep(ABORT_INTERVAL_S)
            now = time.time() - report_lag_s()
            if STATE.t0 is None or now - STATE.t0 < ruleset.settings.delay_abort_eval_s:
                continue
            sources = {
                "locust": LocustSource(STATE.timeline),
                "server": ServerSource(Scrapes(STATE.scrapes)),
            }
            verdict = guardrails.evaluate(
                ruleset, sources, phases=STATE.phases(now), profile=STATE.profile,
                rules=rules, now=now,
            )  # fmt: skip
            # Only measured breaches abort; "no data yet" must not end a run.
            breaches = [b for b in verdict.breaches if b.observed is not None]
            if breaches:
                STATE.aborted = "; ".join(f"{b.rule}: {b.message()}" for b in breaches)
                log.error("guardrail abort: %s", STATE.aborted)
                if runner.environment.parsed_options.headless:
                    runner.quit()
                else:
                    runner.stop()
                return

    return loop
