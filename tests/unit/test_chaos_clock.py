"""The clock-skew experiment (#16): clock steps parse, step and heal a file the apps read, run
the apps with the clock switch, get phases of their own, and its rules catch spurious 422/409."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaos.actions import FaultError, Faults, clock_file
from chaos.experiment import ExperimentError, find, load
from chaos.guardian import rollback_open
from chaos.ledger import Ledger
from chaos.runner import Run, Window, _write_refusals
from service.wallclock import read_offset, write_offset

ROOT = Path(__file__).resolve().parents[2]
HEAD = 'title = "t"\ndescription = "d"\n'
STEP = '[[method]]\naction = "clock"\nstart = "2s"\nduration = "4s"\n'


def test_the_catalogue_steps_ahead_then_jumps_back_inside_the_future_window():
    exp = find("clock-skew")
    assert exp.skews_clocks and exp.scenario == "16"
    ahead, behind = exp.steps
    assert (ahead.spec["offset"], ahead.phase) == (300, "ahead")
    assert (behind.spec["offset"], behind.phase) == (-240, "behind")
    # The backward jump lands as the first step heals, inside the 300 s event-in-future window.
    assert behind.start_s == ahead.start_s + ahead.duration_s
    assert -300 < behind.spec["offset"] < 0
    assert exp.load_profile != "overload"  # the only profile that stamps X-Request-Start
    assert exp.guardrails == ROOT / "chaos" / "guardrails-clock-skew.toml"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (HEAD + STEP, "method[0].offset: seconds (a number) required"),
        (HEAD + STEP + "offset = true\n", "method[0].offset"),
        (HEAD + STEP + "offset = 90000\n", "method[0].offset: within"),
        (HEAD + STEP + 'offset = 5\nphase = "fault"\n', "method[0].phase"),
        (HEAD + STEP + 'offset = 5\nphase = "Ahead"\n', "method[0].phase"),
        (HEAD + STEP.replace('duration = "4s"\n', "") + "offset = 5\n", "method[0].duration"),
        (
            HEAD + '[load]\nprofile = "overload"\nduration = "20s"\n' + STEP + "offset = 5\n",
            "load.profile: overload stamps X-Request-Start",
        ),
    ],
)
def test_bad_clock_steps_name_file_and_key(tmp_path, body, where):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ExperimentError, match=r"bad\.toml: ") as err:
        load(path)
    assert where in str(err.value)


def _faults(tmp_path: Path, pid: int) -> Faults:
    """Faults on a stack whose api, relay and consumer are all process ``pid``."""
    components = {name: {"pid": pid} for name in ("api", "relay", "consumer")}
    stack = SimpleNamespace(state_dir=tmp_path, state={"components": components})
    return Faults(stack)  # type: ignore[arg-type]


def _sleeper(env: dict[str, str]) -> subprocess.Popen:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    return subprocess.Popen(argv, env={**os.environ, **env})  # noqa: S603 - our interpreter


@pytest.fixture
def switched_app(tmp_path):
    """A process started with the clock switch on, reading this test's clock file."""
    env = {
        "RECO_ENV": "test",
        "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox, wall_clock_offset",
        "RECO_TEST_CLOCK_FILE": str(tmp_path / "clock-offset"),
    }
    proc = _sleeper(env)
    yield proc.pid
    proc.kill()
    proc.wait(timeout=5)


def test_a_clock_step_writes_its_offset_and_its_heal_resets_only_its_own(tmp_path, switched_app):
    faults = _faults(tmp_path, switched_app)
    ahead = faults.prepare({"action": "clock", "offset": 300})
    behind = faults.prepare({"action": "clock", "offset": -240})
    path = tmp_path / "clock-offset"
    assert Path(ahead["clock_file"]) == path
    faults.apply(ahead)
    assert read_offset(path) == 300
    faults.apply(behind)  # the later step applied before the earlier healed
    faults.rollback(ahead)
    assert read_offset(path) == -240, "the first heal undid the step that holds"
    faults.rollback(behind)
    assert read_offset(path) == 0
    faults.rollback(behind)  # idempotent, as the guardian may repeat it
    assert read_offset(path) == 0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"RECO_ENV": "development", "RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset"},
        {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset"},
    ],
)
def test_a_clock_step_on_apps_without_the_switch_is_a_failed_step(tmp_path, env):
    proc = _sleeper({**env, "RECO_TEST_CLOCK_FILE": "/elsewhere"} if env else {})
    try:
        fault = _faults(tmp_path, proc.pid).prepare({"action": "clock", "offset": 300})
        with pytest.raises(FaultError, match="^api, relay, consumer not running with the"):
            Faults(None).apply(fault)  # type: ignore[arg-type]
    finally:
        proc.kill()
        proc.wait(timeout=5)


class FakeStack:
    """Records the environment and restarts the runner asks for."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.env: dict[str, dict[str, str] | None] = {}
        self.restarts: list[str] = []

    def set_app_env(self, name, env):
        self.env[name] = env

    def stop_app(self, name):
        self.restarts.append(f"stop {name}")

    def start_app(self, name):
        self.restarts.append(f"start {name}")


def _run(tmp_path: Path, name: str) -> tuple[Run, FakeStack]:
    stack = FakeStack(tmp_path)
    run = Run(find(name), stack, tmp_path, echo=lambda _m: None)  # type: ignore[arg-type]
    return run, stack


def test_the_api_relay_and_consumer_run_with_the_clock_switch_then_without(tmp_path):
    run, stack = _run(tmp_path, "clock-skew")
    (tmp_path / "clock-offset").write_text("300\n")  # left by a run that died
    run._apply_switches()
    assert set(stack.env) == {"api", "relay", "consumer"}
    for env in stack.env.values():
        assert env == {
            "RECO_ENV": "test",
            "RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset",
            "RECO_TEST_CLOCK_FILE": str(clock_file(stack)),  # type: ignore[arg-type]
        }
    assert read_offset(tmp_path / "clock-offset") == 0
    write_offset(tmp_path / "clock-offset", -240)  # the runner died mid-step
    run._rollback_all()
    assert stack.env == {"api": None, "relay": None, "consumer": None}
    assert stack.restarts.count("start api") == 2 and stack.restarts.count("start relay") == 2
    assert read_offset(tmp_path / "clock-offset") == 0
    assert run.ledger.open_entries() == []


def test_the_switches_are_ledgered_first_so_they_are_undone_last(tmp_path):
    """What the guardian finds after a SIGKILL: a fault on top of the switched apps."""
    run, stack = _run(tmp_path, "clock-skew")
    run._apply_switches()
    run.ledger.opened(
        {"action": "clock", "clock_file": str(tmp_path / "clock-offset"), "offset": 300}
    )
    actions = [fault["action"] for _id, fault in Ledger(run.ledger.path).open_entries()]
    assert actions == ["clock", "switches"]
    rollback_open(Ledger(run.ledger.path), Faults(stack))  # type: ignore[arg-type]
    assert stack.env == {"api": None, "relay": None, "consumer": None}
    assert Ledger(run.ledger.path).open_entries() == []


def test_a_run_refused_before_its_switches_restarts_nothing(tmp_path):
    run, stack = _run(tmp_path, "clock-skew")
    run._rollback_all()
    assert stack.env == {} and stack.restarts == []


def test_an_experiment_without_switches_ledgers_none(tmp_path):
    run, stack = _run(tmp_path, "smoke-db-blip")
    run._apply_switches()
    assert stack.env == {} and run.ledger.open_entries() == []


def test_a_negative_control_keeps_its_own_switch_and_no_clock(tmp_path):
    run, stack = _run(tmp_path, "nc-consumer-skip-inbox")
    run._apply_switches()
    assert stack.env == {
        "consumer": {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox"}
    }
    assert not (tmp_path / "clock-offset").exists()


def test_a_step_with_a_phase_gets_its_whole_seconds_in_phases_json(tmp_path):
    run, _stack = _run(tmp_path, "clock-skew")
    run.load_started = 1000.0
    run.windows = [
        Window("clock +300 s", "clock", 1010.2, 1022.1, phase="ahead"),
        Window("clock -240 s", "clock", 1022.1, 1034.0, phase="behind"),
    ]
    run._write_phases(1034.0, 0.5)
    phases = json.loads((tmp_path / "phases.json").read_text())
    assert phases["ahead"] == [1011, 1022] and phases["behind"] == [1023, 1034]
    assert phases["fault"] == [1010.2, 1034.0]


def test_writes_answered_409_or_422_are_counted():
    history = [
        {"op": "write", "status": 202},
        {"op": "write", "status": 422},
        {"op": "write", "status": 409},
        {"op": "write", "status": 422},
        {"op": "write", "status": None},
        {"op": "read", "status": 422},
    ]
    assert _write_refusals(history) == {"writes_409_count": 1, "writes_422_count": 2}


def test_apps_left_running_with_test_switches_refuse_the_next_run(tmp_path, monkeypatch):
    """A switch the guardian could not undo is named, like a toxic left on a link."""
    import chaos.runner

    run, _stack = _run(tmp_path, "smoke-db-blip")
    switched = {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox"}
    run.stack = SimpleNamespace(  # type: ignore[assignment]
        state={"components": {}, "app_env": {"consumer": switched, "api": {"RECO_API_KEYS": "k"}}},
        toxiproxy_url=None,
        database_url=lambda: "",
    )
    monkeypatch.setattr(chaos.runner, "commit_stall_active", lambda _url: False)
    assert run._leftover_faults() == ["consumer runs with test switches (consumer_skip_inbox)"]
