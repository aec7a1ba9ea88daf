"""Real Locust runs against loopback stand-ins for the API: signals, distribution, overload.

No stack: these judge how a run starts, stops and reports, so a stub target keeps them cheap
and lets the tier run them beside the stack-backed runs in test_locust_runs.py.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from harness.ports import free_port
from harness.pytest_plugins.standins import NEVER_BREACHES, AnswerAll, serving
from service.metrics import HISTOGRAM_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness"]
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]


# First in the file: while the other worker boots its stack, this tier's only long run
# (light on CPU: 10 requests/s) goes on here; the timing-sensitive runs come after it.
class _CappedApi(http.server.BaseHTTPRequestHandler):
    """Serves at most CAPACITY requests a second and sheds the rest (503, Retry-After)."""

    CAPACITY = 10
    registry = CollectorRegistry()
    seconds = Histogram(
        "flask_http_request_duration_seconds", "duration", ["method", "path", "status"],
        buckets=HISTOGRAM_BUCKETS, registry=registry,
    )  # fmt: skip
    served: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def _answer(self, route: str, ok: int) -> None:
        started = time.perf_counter()
        with self.lock:
            second = int(time.time())
            admitted = self.served[second] < self.CAPACITY
            self.served[second] += admitted
        status = ok if admitted else 503
        self.send_response(status)
        if not admitted:
            self.send_header("Retry-After", "0")
        body = b'{"items": []}' if status == 200 else b"{}"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.seconds.labels(self.command, route, str(status)).observe(time.perf_counter() - started)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/metrics":
            body = generate_latest(self.registry)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/v1/events/"):
            self._answer("/v1/events/<event_id>", 200)
        else:
            self._answer("/v1/users/<user_id>/recommendations", 200)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer("/v1/events", 202)

    def log_message(self, *args) -> None:  # quiet
        pass


def test_overload_keeps_goodput_sheds_cheaply_and_recovers(tmp_path) -> None:
    """The overload profile at CI size against a service that sheds what exceeds capacity."""
    rules = tmp_path / "overload.toml"
    worker_rule = "no worker timed out, crashed or restarted; no session stuck in a transaction"
    # What a plain Locust run can judge: the shipped file, minus what only `load run` writes.
    rules.write_text(
        f'extends = "{ROOT / "guardrails.toml"}"\n\n[[rule]]\nreplaces = "{worker_rule}"\n'
        'source = "resources"\nexpr = "worker_timeouts == 0"\nprofiles = ["overload"]\n'
        "required = false\n"
    )
    out = tmp_path / "overload"
    with serving(_CappedApi) as url:
        proc = subprocess.run(
            [*LOCUST, "--headless", "--host", url,
             "--profile", "overload", "--capacity", str(_CappedApi.CAPACITY), "-t", "35s",
             "--run-dir", str(out), "--guardrails", str(rules), "--replay-ratio", "0",
             "--only-summary"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    verdict = json.loads((out / "verdict.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    overload = json.loads((out / "overload.json").read_text())
    assert overload["capacity_rps"] == _CappedApi.CAPACITY
    assert overload["offered_rps"] >= 1.8 * _CappedApi.CAPACITY  # twice the capacity
    assert overload["shed_ratio"] > 0.2 and overload["goodput_ratio"] >= 0.9
    checked = {r["rule"] for r in verdict["results"] if r["status"] == "pass"}
    assert {
        "overload: goodput at twice the capacity stays at least 90 % of it",
        "overload: shedding stays cheap (server)",
        "overload: back within SLO 30 s after load drops",
    } <= checked


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextlib.contextmanager
def _target_and_rules(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback stand-in that answers every request, and a rule file that never aborts."""
    rules = tmp_path / "rules.toml"
    rules.write_text(NEVER_BREACHES)
    with serving(AnswerAll) as url:
        yield url, rules


def _interrupt_once_loading(proc: subprocess.Popen, log: Path, sig: int) -> str:
    """Wait (bounded) until Locust is ramping up, send ``sig`` to ``proc``, return its output."""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Ramping to" not in (
            log.read_text() if log.exists() else ""
        ):
            time.sleep(0.2)
        proc.send_signal(sig)
        return proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_stops_locust_too(tmp_path, sig) -> None:
    out = tmp_path / "interrupted"
    with _target_and_rules(tmp_path) as (url, rules):
        cli = subprocess.Popen(  # noqa: S603 - our own CLI
            [*CLI, "load", "run", "--profile", "steady", "--duration", "60s", "--url", url,
             "--no-audit", "--out", str(out), "--guardrails", str(rules)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )  # fmt: skip
        locust, deadline = None, time.monotonic() + 60
        while locust is None and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            locust = next(iter(_children(cli.pid)), None)
        # As Ctrl-C (or a supervisor) would: the signal reaches only the CLI.
        output = _interrupt_once_loading(cli, out / "locust.log", sig)
    assert locust is not None, output
    assert cli.returncode == 2, output
    state = Path(f"/proc/{locust}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    # Locust ended its shape, wrote its outputs and judged the partial run.
    assert json.loads((out / "summary.json").read_text())["interrupted"] == "SIGINT"
    assert (out / "timeline.jsonl").exists() and (out / "run.json").exists()
    assert f"outputs: {out}" in output and "no verdict: interrupted by SIGINT" in output
    # The written verdict says what the exit code says, and so does judging it again.
    verdict = json.loads((out / "verdict.json").read_text())
    assert (verdict["passed"], verdict["exit_code"], verdict["interrupted"]) == (False, 2, "SIGINT")
    assert "<error" in (out / "junit.xml").read_text()
    again = subprocess.run(  # noqa: S603 - our own CLI
        [*CLI, "guardrails", "check", str(out), "--out", str(tmp_path / "again")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert again.returncode == 2, again.stdout + again.stderr
    assert "rules.toml (recorded by the run)" in again.stderr  # the rules that judged it


def test_sigterm_ends_a_direct_locust_shape_run_with_outputs_and_exit_2(tmp_path) -> None:
    out, log = tmp_path / "direct", tmp_path / "locust.log"
    with _target_and_rules(tmp_path) as (url, rules):
        locust = subprocess.Popen(  # noqa: S603 - our own locustfile
            [*LOCUST, "--headless", "--host", url, "--profile", "steady", "--run-time", "60s",
             "--run-dir", str(out), "--guardrails", str(rules), "--logfile", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )  # fmt: skip
        # What a CI timeout or a supervisor sends.
        output = _interrupt_once_loading(locust, log, signal.SIGTERM)
    assert locust.returncode == 2, output  # a partial run is never a pass
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["duration_s"] < 30
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["counts"]["breaches"] == 0 and verdict["interrupted"] == "SIGTERM"
    assert (verdict["passed"], verdict["exit_code"]) == (False, 2)


class _Counting200(AnswerAll):
    """AnswerAll that counts what it answered (class-wide, one test at a time)."""

    answered = 0
    lock = threading.Lock()

    def _answer(self) -> None:
        super()._answer()
        with self.lock:
            type(self).answered += 1

    do_GET = do_POST = _answer


def test_ctrl_c_on_a_distributed_direct_run_loses_no_worker_report(tmp_path) -> None:
    """Ctrl-C reaches a --processes master and its workers alike: each reports before leaving.

    Left to Python, the workers died at once and their last reports never reached the master.
    """
    out, log = tmp_path / "processes", tmp_path / "locust.log"
    rules = tmp_path / "rules.toml"
    rules.write_text(NEVER_BREACHES)
    _Counting200.answered = 0
    with serving(_Counting200) as url:
        locust = subprocess.Popen(  # noqa: S603 - our own locustfile
            [*LOCUST, "--headless", "--host", url, "--profile", "steady", "-u", "6",
             "--run-time", "60s", "--processes", "2", "--run-dir", str(out),
             "--guardrails", str(rules), "--metrics-url", "off", "--logfile", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            start_new_session=True,  # a process group of its own, as a terminal's job is
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while (
                _Counting200.answered < 40 and time.monotonic() < deadline and locust.poll() is None
            ):
                time.sleep(0.1)
            assert _Counting200.answered >= 40, log.read_text() if log.exists() else ""
            os.killpg(locust.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            output = locust.communicate(timeout=60)[0]
        finally:
            if locust.poll() is None:
                os.killpg(locust.pid, signal.SIGKILL)
                locust.wait(timeout=10)
    assert locust.returncode == 2, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT"
    counted = summary["endpoints"]["Aggregated"]["count"]
    # Only requests cut off in flight (at most one per user) may be missing.
    assert _Counting200.answered - 6 <= counted <= _Counting200.answered, output


def _ip(hexed: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order, little-endian)."""
    raw = b"".join(bytes.fromhex(hexed[i : i + 8])[::-1] for i in range(0, len(hexed), 8))
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on (its own sockets, read from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                found.add((_ip(host), int(port, 16)))
    return found


@contextlib.contextmanager
def _processes_runs(tmp_path: Path, *extras: tuple[str, ...]) -> Iterator[list[subprocess.Popen]]:
    """One short headless `--processes 2` run per ``extras``, all at once; stopped afterwards."""
    runs = []
    with _target_and_rules(tmp_path) as (url, rules):
        try:
            for n, extra in enumerate(extras):
                with open(tmp_path / f"console-{n}.txt", "w") as console:  # the child keeps it
                    runs.append(subprocess.Popen(  # noqa: S603 - our own locustfile
                        [*LOCUST, "--headless", "--host", url, "--profile", "smoke", "-t", "3s",
                         "--processes", "2", "--run-dir", str(tmp_path / f"run-{n}"),
                         "--guardrails", str(rules), "--metrics-url", "off", "--only-summary",
                         *extra],
                        stdout=console, stderr=subprocess.STDOUT, cwd=ROOT,
                        start_new_session=True,  # its workers in its group: stopped with it
                    ))  # fmt: skip
            yield runs
        finally:
            for run in runs:
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGKILL)
                run.wait(timeout=10)


def _master_address(run: subprocess.Popen) -> set[tuple[str, int]]:
    """Where the master (the process started) listens, once it does (a bounded wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and run.poll() is None:
        with contextlib.suppress(OSError):  # /proc entries of a process just exiting
            if found := _listening(run.pid):
                return found
        time.sleep(0.1)
    return set()


def _finished(tmp_path: Path, runs: list[subprocess.Popen]) -> None:
    """Wait for every run; each must pass (its console in the message if not)."""
    codes = [run.wait(timeout=60) for run in runs]
    for n, code in enumerate(codes):
        assert code == 0, (tmp_path / f"console-{n}.txt").read_text()[-3000:]


def test_processes_runs_listen_on_loopback_ports_of_their_own(tmp_path) -> None:
    """Locust's master listens on every interface at 5557: a second run's workers joined the
    first's master. Two runs at once now each listen on a free loopback port."""
    with _processes_runs(tmp_path, (), ()) as runs:
        addresses = [_master_address(run) for run in runs]
        _finished(tmp_path, runs)
    assert all(len(found) == 1 for found in addresses), addresses
    (host_a, port_a), (host_b, port_b) = (next(iter(found)) for found in addresses)
    assert host_a == host_b == "127.0.0.1"
    assert port_a != port_b and 5557 not in (port_a, port_b)
    for n in range(2):  # each run's own workers made its requests
        summary = json.loads((tmp_path / f"run-{n}" / "summary.json").read_text())
        assert summary["endpoints"]["Aggregated"]["count"] > 0


def test_an_explicit_master_bind_port_is_honoured_and_a_short_run_keeps_pace(tmp_path) -> None:
    """A port the user names is the master's, and its forked workers connect to it.

    The run is 5 s long: its forked workers start about a second after the shape's ramp, and
    the pacing check counted that start-up as requests missing (0.92 of the offered load).
    """
    rules = tmp_path / "pace.toml"
    rules.write_text(  # the shipped rule
        '[[rule]]\nname = "generator kept pace"\nphase = "plateau"\n'
        'expr = "throughput_ratio >= 0.95"\nrequired = true\n'
    )
    port = free_port()
    given = ("--master-bind-port", str(port), "-t", "5s", "--guardrails", str(rules))
    with _processes_runs(tmp_path, given) as runs:
        address = _master_address(runs[0])
        _finished(tmp_path, runs)
    assert address == {("127.0.0.1", port)}
    verdict = json.loads((tmp_path / "run-0" / "verdict.json").read_text())
    assert [(r["rule"], r["status"]) for r in verdict["results"]] == [
        ("generator kept pace", "pass")
    ], verdict


# Locust's parser with the locustfile's hooks, as `locust` builds it: the options it settles.
PARSE = """
import json, os, sys
import locust
from loadtests import hooks
from locust.argument_parser import get_parser
for argv, env in json.loads(sys.argv[1]):
    o = get_parser().parse_args(argv, env_vars={**os.environ, **env})
    print(json.dumps([o.master_bind_host, o.master_bind_port, o.master_port]))
"""


def test_a_users_choice_of_master_address_wins_over_ours(tmp_path) -> None:
    """From the command line, a LOCUST_ variable or a config file; Locust's 5557 off --processes.

    None: ours, one free port for both ends (the master's and the one its workers connect to).
    """
    conf = tmp_path / "locust.conf"
    conf.write_text("master-bind-host = 127.0.0.3\nmaster-port = 7003\n")
    processes = ["--processes", "2"]
    cases = [
        (processes, {}, ["127.0.0.1", None, None]),
        (["--master"], {}, ["127.0.0.1", 5557, 5557]),
        (["--worker"], {}, ["127.0.0.1", 5557, 5557]),  # where its master is (--master-host)
        ([*processes, "--worker"], {}, ["127.0.0.1", 5557, 5557]),
        ([*processes, "--master-bind-port", "7001"], {}, ["127.0.0.1", 7001, 7001]),
        ([*processes, "--master-bind-port", "7001", "--master-port", "7005"], {},
         ["127.0.0.1", 7001, 7005]),
        ([*processes, "--master-bind-host", "127.0.0.4"], {}, ["127.0.0.4", None, None]),
        (processes, {"LOCUST_MASTER_BIND_HOST": "127.0.0.5", "LOCUST_MASTER_BIND_PORT": "7002"},
         ["127.0.0.5", 7002, 7002]),
        ([*processes, "--config", str(conf)], {}, ["127.0.0.3", 7003, 7003]),
    ]  # fmt: skip
    proc = subprocess.run(  # noqa: S603 - Locust's parser and our hooks
        [sys.executable, "-c", PARSE, json.dumps([[argv, env] for argv, env, _ in cases])],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    parsed = [json.loads(line) for line in proc.stdout.splitlines()]
    for (argv, env, want), (host, bind, connect) in zip(cases, parsed, strict=True):
        if want[1] is None:
            assert bind == connect and bind != 5557, (argv, env)
            bind = connect = None
        assert [host, bind, connect] == want, (argv, env)


class _FakeApi(http.server.BaseHTTPRequestHandler):
    """Refuses reads with and without Retry-After; accepts writes, then cannot find them.

    Every other new Idempotency-Key first gets a 504 (outcome unknown): the writer retries
    it with the same key, if its retry budget allows, and that retry is accepted.
    """

    keys: set[str] = set()
    lock = threading.Lock()

    def _send(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/metrics":
            self._send(200)
        elif self.path.startswith("/v1/events/"):
            self._send(404)  # an accepted event the API cannot find
        elif "surface=home" in self.path:
            self._send(503, {"Retry-After": "0"})  # an intended shed
        else:
            self._send(503)  # a refusal without Retry-After: a failure

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key") or ""
        with self.lock:
            unknown = key not in self.keys and len(self.keys) % 2 == 0
            self.keys.add(key)
        self._send(504 if unknown else 202)

    def log_message(self, *args) -> None:  # quiet
        pass


def _direct_run(tmp_path: Path, url: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "direct"
    rules = tmp_path / "rules.toml"
    rules.write_text(NEVER_BREACHES)
    proc = subprocess.run(
        [*LOCUST, "--headless", "--host", url, "--profile", "smoke", "-u", "10", "-t", "6s",
         "--run-dir", str(out), "--guardrails", str(rules), "--replay-ratio", "0",
         "--only-summary", *extra],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    return proc, out


def test_sheds_need_retry_after_and_accepted_events_must_be_found(tmp_path) -> None:
    with serving(_FakeApi) as url:
        proc, out = _direct_run(tmp_path, url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    endpoints = summary["endpoints"]
    reads, polls = endpoints["GET /v1/users/[id]/recommendations"], endpoints["GET /v1/events/[id]"]
    assert reads["sheds"] > 0 and reads["failures"] > 0
    assert reads["sheds"] + reads["failures"] == reads["count"]
    assert polls["failures"] > 0  # 404 for an id that got a 202 is an invisible write
    # Every read is refused (503) and would be retried up to 3 attempts: the retry budget
    # holds what is sent to its share of the first attempts plus its floor's reserve (one 10 s
    # window in a 6 s run), and counts what it refused. First attempts still in flight when
    # the users stopped (at most one per user) deposited but are not counted.
    budget, total = summary["retry_budget"], endpoints["Aggregated"]
    assert budget == {"ratio": 0.2, "floor_per_s": 1.0, "ttl_s": 10.0}
    first = total["count"] - total["retries"]
    assert 0 < total["retries"] <= 0.2 * (first + 10) + 1.0 * 10
    assert reads["retries"] > 0 and reads["retries_refused"] > 0
    # The reads spend the budget: most retries of the writes' unknown outcomes are refused.
    writes = endpoints["POST /v1/events"]
    assert writes["retries_refused"] > 0 and polls["retries"] == polls["retries_refused"] == 0
    # A refused retry is not sent and leaves no line: one history line per write answered
    # (plus those cut off by the stop), and a write whose retry was refused ends on its
    # unknown outcome (info), as the audit expects.
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    answered = [op for op in history if not (op["error"] or "").startswith("interrupted")]
    assert len(answered) == writes["count"]
    last = {op["key"]: op for op in history}
    assert {op["outcome"] for op in last.values()} == {"ok", "info"}


def test_a_run_whose_metrics_were_never_scraped_exits_2(tmp_path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with serving(_FakeApi) as url:
        proc, out = _direct_run(tmp_path, url, "--metrics-url", f"http://127.0.0.1:{closed}/m")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.search(r"metrics: 0 of \d+ scrapes of \S+ succeeded", proc.stderr)
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["exit_code"] == 2 and "metrics: 0 of" in verdict["errors"][0]


def test_load_options_lists_what_the_locustfile_adds() -> None:
    """Locust prints --help before it reads a locustfile; `load options` shows its options."""
    proc = subprocess.run(
        [*CLI, "load", "options"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in ("--run-dir", "--guardrails", "--user-rps", "--capacity", "--retry-budget",
                   "--retry-floor", "--replay-ratio", "--users", "--run-time"):  # fmt: skip
        assert option in proc.stdout, option
    assert "load profile: smoke, steady" in proc.stdout


def test_plain_locust_in_the_repository_finds_the_locustfile() -> None:
    """pyproject.toml's [tool.locust] names it, so `locust` needs no -f from the root."""
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "--list"], capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"EventWriter", "RecommendationReader", "StatusPoller"} <= set(proc.stdout.split())
