"""Run `st run` against a live service and write JUnit, NDJSON and contract.json reports."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.contract import junit
from harness.contract.allowlist import Allowlist
from harness.contract.check_plan import plan
from harness.contract.config import API_KEY_ENV, write_peers_config
from harness.contract.paths import ALLOWLIST_PATH, CONFIG_PATH, ROOT
from harness.contract.summary import fired_fail_on, summarise

EXIT_OK, EXIT_BREACH, EXIT_ERROR = 0, 1, 2
CHECKS = ("all",)  # st run --checks: contract.json's not_run is worked out from the same list
# Schemathesis exits 1 when it found failures; anything else means it could not do its job.
ST_FINDINGS_EXIT = 1
# An event no client wrote: the second key's read of it shows whether the service knows the key.
UNKNOWN_EVENT = "00000000-0000-4000-8000-000000000000"


@dataclasses.dataclass(frozen=True)
class ContractRun:
    """What to test and where to write the results."""

    url: str
    out_dir: Path
    max_examples: int
    seed: int | None  # None: deterministic generation (CI)
    api_key: str
    allowlist: Allowlist
    peer_api_key: str | None = None  # a second client's key: object_level_authorization runs
    allowlist_path: Path = ALLOWLIST_PATH
    rate_limit: str | None = None  # st's "N/UNIT" or "auto": under a deployment's rate limit
    timeout_s: float = 600.0
    request_timeout_s: float = 10.0
    wait_for_schema_s: float = 15.0  # a service that is still starting gets this long

    @property
    def junit_path(self) -> Path:
        return self.out_dir / "junit.xml"

    @property
    def ndjson_path(self) -> Path:
        return self.out_dir / "events.ndjson"

    @property
    def report_path(self) -> Path:
        return self.out_dir / "schemathesis.json"

    @property
    def dropped_log(self) -> Path:
        return self.out_dir / "allowlisted.ndjson"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "contract.json"


def st_argv(run: ContractRun, config_path: Path = CONFIG_PATH) -> list[str]:
    """The Schemathesis command line: every check, positive and negative data."""
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_path),
        "run",
        f"{run.url.rstrip('/')}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--mode",
        "all",
        "--max-examples",
        str(run.max_examples),
        "--request-timeout",
        str(run.request_timeout_s),
        "--wait-for-schema",
        str(run.wait_for_schema_s),
        "--report",
        "junit,ndjson,json",
        "--report-junit-path",
        str(run.junit_path),
        "--report-ndjson-path",
        str(run.ndjson_path),
        "--report-json-path",
        str(run.report_path),
        "--no-color",
    ]
    # Deterministic generation for CI; an explicit seed explores (reproducibly) for nightly.
    seeding = ["--generation-deterministic"] if run.seed is None else ["--seed", str(run.seed)]
    pacing = ["--rate-limit", run.rate_limit] if run.rate_limit else []
    return argv + seeding + pacing


def st_env(run: ContractRun) -> dict[str, str]:
    """The subprocess environment: the key, the allow-list hooks and where they log drops."""
    env = dict(os.environ)
    env.update(
        {
            API_KEY_ENV: run.api_key,
            "SCHEMATHESIS_HOOKS": "harness.contract.st_hooks",
            "RECO_CONTRACT_ALLOWLIST": str(run.allowlist_path),
            "RECO_CONTRACT_ALLOWLIST_LOG": str(run.dropped_log),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    return env


def _tee(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    timeout_s: float,
    echo: Callable[[str], None],
) -> tuple[int, bool]:
    """Run ``argv``, copying its output to ``echo`` and ``log_path``; kill it after the timeout."""
    proc = subprocess.Popen(  # noqa: S603 - the st CLI with arguments built here
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        with proc, log_path.open("w", encoding="utf-8") as log:  # closes the pipe, reaps
            assert proc.stdout is not None
            for line in proc.stdout:  # ends when the process exits or is killed
                log.write(line)
                echo(line.rstrip("\n"))
            code = proc.wait(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return code, timed_out.is_set()


@contextlib.contextmanager
def st_config_path(run: ContractRun) -> Iterator[Path]:
    """The configuration `st run` reads: the shared one, or a copy naming both keys as peers."""
    if run.peer_api_key is None:
        yield CONFIG_PATH
        return
    # The auth file holds both keys: a private directory (0700), gone when the run ends, so
    # no key is left in the reports.
    with tempfile.TemporaryDirectory(prefix="reco-contract-peers-") as directory:
        yield write_peers_config(run.api_key, run.peer_api_key, Path(directory))


def refused_peer(run: ContractRun) -> str | None:
    """Why the service refuses the second API key, or None when it takes it (or is not up)."""
    if run.peer_api_key is None:
        return None
    import requests

    from service.auth import HEADER

    url = f"{run.url.rstrip('/')}/v1/events/{UNKNOWN_EVENT}"
    try:
        reply = requests.get(url, headers={HEADER: run.peer_api_key}, timeout=run.request_timeout_s)
    except requests.RequestException:
        return None  # Schemathesis waits for the service and reports one it cannot reach
    if reply.status_code not in (401, 403):
        return None
    # Every replay with a refused key is refused too: the check would pass having judged nothing.
    return (
        f"the service refuses --peer-api-key (GET /v1/events/{{event_id}} answered "
        f"{reply.status_code}): object_level_authorization would judge nothing"
    )


def execute(run: ContractRun, echo: Callable[[str], None] = print) -> tuple[int, dict[str, Any]]:
    """Run Schemathesis, write contract.json and return (exit code, summary)."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    run.dropped_log.unlink(missing_ok=True)
    refused = refused_peer(run)
    if refused is not None:
        return conclude(run, None, False, not_started=refused)
    with st_config_path(run) as config_path:
        # cwd = out dir, so Schemathesis' cache (.schemathesis/) lands there and `st replay` works.
        code, timed_out = _tee(
            st_argv(run, config_path),
            st_env(run),
            run.out_dir,
            run.out_dir / "schemathesis.log",
            run.timeout_s,
            echo,
        )
        return conclude(run, code, timed_out, config_path)


def conclude(
    run: ContractRun,
    st_code: int | None,
    timed_out: bool,
    config_path: Path = CONFIG_PATH,
    not_started: str | None = None,  # why Schemathesis was not started (st_code None)
) -> tuple[int, dict[str, Any]]:
    """Judge what Schemathesis left in the out dir: write contract.json, align junit.xml."""
    summary = _summary(run, st_code, timed_out, config_path, not_started)
    run.summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if summary["passed"]:
        return EXIT_OK, summary
    # A CI that reads only junit.xml must see the run fail as the exit code says.
    junit.fail_warnings(run.junit_path, fired_fail_on(summary.get("warnings", {})))
    junit.fail_if_green(run.junit_path, _why_failed(summary))
    if summary.get("error") or summary["operations"] == 0:
        return EXIT_ERROR, summary
    return EXIT_BREACH, summary


def _summary(
    run: ContractRun, code: int | None, timed_out: bool, config_path: Path, not_started: str | None
) -> dict[str, Any]:
    """contract.json: the reports summarised, or why the run left none to summarise."""
    allowlist_state = {
        "honoured": [e.id for e in run.allowlist.active],
        "expired": [e.id for e in run.allowlist.expired],
    }
    meta = {
        "url": run.url,
        "seed": run.seed,
        "deterministic": run.seed is None,
        "max_examples": run.max_examples,
        "rate_limit": run.rate_limit,
        "peer_api_key": run.peer_api_key is not None,  # whether, never which
        "st_exit_code": code,
        "timed_out": timed_out,
        "reports": {
            "junit": str(run.junit_path),
            "ndjson": str(run.ndjson_path),
            "schemathesis_json": str(run.report_path),
        },
    }
    if (
        not_started
        or timed_out
        or code not in (0, ST_FINDINGS_EXIT)
        or not run.report_path.exists()
    ):
        return {
            "operations": 0,
            "checks": 0,
            "failures": 0,
            "errors": 1,  # the run itself: a gate on "errors == 0" must not pass it
            "allowlisted": 0,
            "passed": False,
            "error": not_started or _why_no_result(code, timed_out),
            "run": meta,
        }
    checks = plan(run.api_key, CHECKS, run.request_timeout_s, config_path)
    return summarise(
        run.report_path, run.ndjson_path, run.dropped_log, allowlist_state, meta, checks
    )


def _why_failed(summary: dict[str, Any]) -> str:
    """What a failed run's junit.xml says when no test case in it failed."""
    if summary.get("error"):
        return summary["error"]
    if summary["operations"] == 0:
        return "Schemathesis tested no operation"
    stop = summary["run"].get("stop_reason")
    return (
        f"the run did not pass ({summary['failures']} failures, {summary['errors']} errors, "
        f"stop reason {stop}): see contract.json"
    )


def _why_no_result(code: int | None, timed_out: bool) -> str:
    if timed_out:
        return "Schemathesis did not finish within the time limit"
    return f"Schemathesis exited with {code} without a usable report (see schemathesis.log)"


@contextlib.contextmanager
def service_url(
    url: str | None, log: Callable[[str], None] = print, api_keys: str | None = None
) -> Iterator[str]:
    """Yield ``url``, or start the local stack in a temporary state dir and stop it afterwards.

    ``api_keys`` (``RECO_API_KEYS``' form) are the keys that stack's API accepts.
    """
    if url:
        yield url
        return
    from harness.stack import Stack

    state_dir = Path(tempfile.mkdtemp(prefix="reco-contract-"))
    os.chmod(state_dir, 0o755)  # noqa: S103 - the postgres and rabbitmq users must traverse it
    stack = Stack(state_dir)
    if api_keys:
        stack.set_app_env("api", {"RECO_API_KEYS": api_keys})
    try:
        stack.up(log=log)
        yield stack.state["components"]["api"]["url"]
    finally:
        stack.down(purge=True, log=log)


def own_stack_keys(api_key: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Keys for a stack the command starts itself: ``api_key`` and a fresh peer's.

    None when the environment names the keys (the stack's API takes those) or ``api_key``
    cannot be written in ``RECO_API_KEYS``' comma-separated ``client_id:secret`` form.
    """
    if environ.get("RECO_API_KEYS") or "," in api_key or not api_key.strip():
        return None
    peer = secrets.token_urlsafe(24)
    return f"contract:{api_key},contract-peer:{peer}", peer
