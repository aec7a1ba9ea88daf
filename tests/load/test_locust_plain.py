"""Plain `locust` with the project's locustfile, used as Locust users do: --json and the web UI.

A loopback stand-in answers every request, so these judge the harness, not the service.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness.ports import free_port
from harness.pytest_plugins.standins import NEVER_BREACHES, AnswerAll, serving

ROOT = Path(__file__).resolve().parents[2]
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]


def test_json_keeps_stdout_a_json_document(tmp_path) -> None:
    """`--json` prints Locust's final stats on stdout: the verdict table goes to stderr."""
    rules = tmp_path / "rules.toml"
    rules.write_text(NEVER_BREACHES)
    with serving(AnswerAll) as url:
        proc = subprocess.run(  # noqa: S603 - our own locustfile
            [*LOCUST, "--headless", "--host", url, "-u", "2", "-t", "3s", "--json",
             "--run-dir", str(tmp_path / "run"), "--guardrails", str(rules),
             "--metrics-url", "off"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)  # the whole of stdout
    assert sum(entry["num_requests"] for entry in stats) > 0
    assert "PASS: 0 breach(es)" in proc.stderr


class WebUi:
    """A `locust` web UI process, driven over HTTP as its page would drive it."""

    def __init__(self, tmp_path: Path, url: str, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "locust.log"
        self.proc = subprocess.Popen(  # noqa: S603 - our own locustfile
            [*LOCUST, "--host", url, "--web-host", "127.0.0.1", "--web-port", str(self.port),
             "--metrics-url", "off", "--logfile", str(self.log), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.page = self.get("/")
                return
            time.sleep(0.2)
        self.close()
        raise AssertionError(f"no web UI on {self.base}: {self.output}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:  # noqa: S310
            return resp.read().decode()

    def post(self, path: str, form: dict[str, str] | None = None) -> dict:
        data = urllib.parse.urlencode(form or {}).encode()
        with urllib.request.urlopen(self.base + path, data=data, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def form(self, **changes: str) -> dict[str, str]:
        """The start form as the page fills it in: its fields' defaults, then ``changes``."""
        args = json.loads(re.search(r"window\.templateArgs = (\{.*\})", self.page)[1])
        form = {"user_count": "4", "spawn_rate": "1", "host": args["host"], "run_time": "3s",
                "profile": args["profile"]}  # fmt: skip
        for name, option in args["extra_options"].items():
            value = option["default_value"]
            form[name] = "" if value is None else str(value)
        return {**form, **changes}

    def swarm(self, **changes: str) -> dict:
        return self.post("/swarm", self.form(**changes))

    def state(self) -> str:
        return json.loads(self.get("/stats/requests"))["state"]

    def wait_until_stopped(self, timeout_s: float = 30) -> None:
        """Until the test stopped (Locust caches /stats/requests for 2 s: it lags behind)."""
        deadline = time.monotonic() + timeout_s
        time.sleep(2.1)  # until then it may still say how the previous test ended
        while self.state() != "stopped" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert self.state() == "stopped", self.output

    def close(self) -> int:
        """SIGTERM (a supervisor's stop), then Locust's exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.output = self.proc.communicate(timeout=30)[0]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.output = self.proc.communicate(timeout=10)[0]
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    @output.setter
    def output(self, value: str) -> None:
        self._console = value


@contextlib.contextmanager
def web_ui(tmp_path: Path, *extra: str) -> Iterator[WebUi]:
    rules = tmp_path / "rules.toml"
    rules.write_text(NEVER_BREACHES)
    with serving(AnswerAll) as url:
        ui = WebUi(tmp_path, url, "--guardrails", str(rules), *extra)
        try:
            yield ui
        finally:
            ui.close()


def test_each_web_ui_test_without_a_run_dir_gets_its_own(tmp_path) -> None:
    """The form sends its run-dir field empty: that made the current directory the run's."""
    with web_ui(tmp_path) as ui:
        assert ui.swarm()["success"], ui.output
        ui.wait_until_stopped()
        assert ui.swarm(profile="steady")["success"], ui.output
        ui.wait_until_stopped()
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "history.jsonl").exists()
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name.split("-", 1)[1] for run in runs] == ["smoke", "steady"], runs
    for run in runs:  # neither test's outputs overwrote the other's
        assert json.loads((run / "verdict.json").read_text())["exit_code"] == 0
        assert json.loads((run / "summary.json").read_text())["profile"] == run.name[17:]


def test_the_web_ui_refuses_a_start_form_it_cannot_run_and_says_why(tmp_path) -> None:
    """Locust hands a shape run's form over unchecked: bad values crashed the shape (HTTP 500)."""
    with web_ui(tmp_path, "--run-dir", str(tmp_path / "run")) as ui:
        refused = ui.swarm(user_rps="-1", profile="nope")
        assert not refused["success"], refused
        assert "--user-rps must be at least 0" in refused["message"]
        assert "unknown profile 'nope'" in refused["message"]
        assert ui.state() == "ready" and not (tmp_path / "run").exists()
        # A rate with a fraction, under another profile than the one Locust started with.
        assert ui.swarm(user_rps="1.5", profile="steady")["success"], ui.output
        ui.wait_until_stopped()
        code = ui.close()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["profile"], summary["user_rps"]) == ("steady", 1.5)
    assert code == 0, ui.output  # no greenlet died on the way


def test_the_class_picker_runs_only_with_the_profile_shape(tmp_path) -> None:
    """The picker offers Locust's Default shape too: without the profile nothing was written."""
    with web_ui(tmp_path, "--class-picker", "--run-dir", str(tmp_path / "run")) as ui:
        readers = {"user_classes": "RecommendationReader"}
        refused = ui.swarm(shape_class="Default", **readers)
        assert not refused["success"] and "ProfileShape" in refused["message"], refused
        assert ui.swarm(shape_class="ProfileShape", **readers)["success"], ui.output
        ui.wait_until_stopped()
    endpoints = json.loads((tmp_path / "run" / "summary.json").read_text())["endpoints"]
    assert set(endpoints) == {"GET /v1/users/[id]/recommendations", "Aggregated"}


def test_a_web_ui_test_cut_short_is_never_a_pass(tmp_path) -> None:
    """Stopped from the page, or its process told to quit mid-test: a partial run (exit 2)."""
    run = tmp_path / "run"
    with web_ui(tmp_path, "--run-dir", str(run)) as ui:
        assert ui.swarm(run_time="40s")["success"], ui.output
        time.sleep(3)
        assert ui.post("/stop")["success"]
        ui.wait_until_stopped()
        verdict = json.loads((run / "verdict.json").read_text())
        assert (verdict["passed"], verdict["exit_code"]) == (False, 2), verdict
        assert verdict["interrupted"] == "a stop before the profile ended"
        assert ui.swarm(run_time="40s")["success"], ui.output
        time.sleep(3)
        code = ui.close()  # SIGTERM, as a supervisor stops it
    assert code == 2, ui.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == "Locust quitting before the profile ended"
    assert summary["duration_s"] < 20


def test_tags_are_refused_at_start_up_and_ignored_options_named(tmp_path) -> None:
    """--tags started every user without a task (a traceback each); -r went unmentioned."""
    proc = subprocess.run(  # noqa: S603 - our own locustfile
        [*LOCUST, "--headless", "--host", "http://127.0.0.1:9", "-t", "5s", "-r", "3",
         "--tags", "read", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "error: --tags read: no task carries a tag" in proc.stderr
    assert "-r/--spawn-rate 3 is ignored" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_web_ui_judges_a_test_by_the_guardrail_file_its_form_names(tmp_path) -> None:
    """The form's guardrails field was ignored: every test was judged by the start-up file."""
    broken, strict = tmp_path / "broken.toml", tmp_path / "strict.toml"
    broken.write_text("[[rule]]\nname = 'no expression'\n")
    strict.write_text('[[rule]]\nname = "never"\nexpr = "count < 0"\n')
    run = tmp_path / "run"
    with web_ui(tmp_path, "--run-dir", str(run)) as ui:
        refused = ui.swarm(guardrails=str(broken))
        assert not refused["success"] and "guardrails: " in refused["message"], refused
        assert ui.swarm(guardrails=str(strict))["success"], ui.output
        ui.wait_until_stopped()
    verdict = json.loads((run / "verdict.json").read_text())
    assert [r["rule"] for r in verdict["results"]] == ["never"]
    assert verdict["exit_code"] == 1
