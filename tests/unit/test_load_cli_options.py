"""`reco-harness load run` takes Locust's short options for users and run time."""

from __future__ import annotations

import pika.exceptions
import psycopg2
import pytest

from harness.cli import main
from harness.commands import load as load_command


@pytest.fixture
def parsed(monkeypatch):
    """Stop the run where the profile is built; keep what the options parsed to."""
    seen: dict = {}

    def build(profile, users, seconds, user_rps, capacity_rps=None):
        seen.update(profile=profile, users=users, seconds=seconds)
        if capacity_rps is not None:
            seen["capacity_rps"] = capacity_rps
        raise ValueError("stop here")

    monkeypatch.setattr("harness.commands.load.shapes.build", build)
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["-u", "7", "-t", "90s"],
        ["--users", "7", "--duration", "90s"],
        ["--users", "7", "--run-time", "1m30s"],
    ],
)
def test_short_and_locust_spellings_mean_the_same(parsed, argv):
    assert main(["load", "run", "--profile", "steady", *argv]) == 2
    assert parsed == {"profile": "steady", "users": 7, "seconds": 90.0}


def test_a_run_time_below_one_second_is_a_usage_error(parsed, capsys):
    assert main(["load", "run", "--profile", "smoke", "-t", "500ms"]) == 2
    assert "a run lasts at least 1s" in capsys.readouterr().err
    assert parsed == {}  # refused before any shape was built


def test_a_run_no_longer_than_the_warm_up_is_named_before_it_starts(capsys):
    """Its phase 'run' is empty: every rule judged there breached with 'no data', unexplained."""
    argv = ["load", "run", "--profile", "smoke", "--url", "http://127.0.0.1:1"]
    assert main([*argv, "-t", "5s"]) == 2  # refused later for the missing --no-audit
    assert "warning: the run lasts 5 s, no longer than the guardrails' 5 s warm-up" in (
        capsys.readouterr().err
    )
    assert main([*argv, "-t", "6s"]) == 2
    assert "warm-up" not in capsys.readouterr().err


def test_a_fractional_run_time_rounds_up_to_whole_seconds(parsed):
    assert main(["load", "run", "--profile", "smoke", "-t", "90.9s"]) == 2
    assert parsed["seconds"] == 91


def test_workers_meet_their_own_master_on_a_free_loopback_port(tmp_path, monkeypatch):
    """On Locust's default (every interface, 5557) a second run's workers joined the first's."""
    monkeypatch.setattr(load_command, "free_port", lambda: 43123)
    argv = load_command._locust_argv(
        "http://127.0.0.1:1", "smoke", tmp_path, tmp_path / "g.toml", None, 10, None, 2
    )
    flags = dict(zip(argv, argv[1:], strict=False))
    assert flags["--processes"] == "2" and flags["--master-bind-host"] == "127.0.0.1"
    assert flags["--master-bind-port"] == flags["--master-port"] == "43123"


def test_locust_gets_the_whole_seconds_the_shape_was_built_with(tmp_path):
    argv = load_command._locust_argv(
        "http://127.0.0.1:1", "smoke", tmp_path, tmp_path / "g.toml", None, 91, None, 0
    )
    assert argv[argv.index("--run-time") + 1] == "91s"


class FakeStack:
    """A ready stack as `load run` sees it, without processes behind it."""

    def __init__(self, state_dir, components=("api", "relay", "consumer")):
        self.state_dir = state_dir
        self.state = {"components": {name: {} for name in components}}

    def status(self):
        return [{"name": "api", "state": "ready", "url": "http://127.0.0.1:1"}]

    def database_url(self):
        return "postgresql://127.0.0.1:1/none"

    def amqp_url(self):
        return "amqp://127.0.0.1:1/"

    def app_url(self, _name):
        return None


@pytest.fixture
def no_locust(monkeypatch):
    def refuse(*_a, **_kw):
        raise AssertionError("Locust must not start when the audit cannot run")

    monkeypatch.setattr(load_command, "_run_locust", refuse)


def test_url_without_no_audit_is_refused_before_any_load(no_locust, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["load", "run", "--url", "http://127.0.0.1:1", "--out", str(out)]
    assert main(argv) == 2
    assert "pass --no-audit" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("components", "earlier_error", "message"),
    [
        (("api",), None, "no consumer or relay in the stack"),
        (("api", "relay", "consumer"), psycopg2.OperationalError("refused"), "OperationalError"),
        (("api", "relay", "consumer"), pika.exceptions.AMQPConnectionError("no"), "AMQP"),
    ],
)
def test_a_local_audit_that_cannot_run_exits_2(
    monkeypatch, no_locust, tmp_path, capsys, components, earlier_error, message
):
    monkeypatch.setattr(load_command, "Stack", lambda d: FakeStack(d, components))

    def earlier(*_a):
        raise earlier_error

    monkeypatch.setattr(load_command.audit_module, "earlier", earlier)
    argv = ["load", "run", "--state-dir", str(tmp_path / "s"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "pass --no-audit" in err
    assert "not with --url" not in err


def test_an_audit_that_fails_after_the_run_is_reported_not_swallowed(monkeypatch, tmp_path):
    def audit(*_a, **_kw):
        raise psycopg2.OperationalError("server closed the connection")

    monkeypatch.setattr(load_command.audit_module, "audit", audit)
    with pytest.raises(load_command.AuditUnavailable, match="could not reconcile"):
        load_command._audit(FakeStack(tmp_path), tmp_path, baseline=None)


def test_a_server_threshold_between_buckets_is_refused(no_locust, tmp_path, capsys):
    rules = tmp_path / "g.toml"
    rules.write_text('[[rule]]\nsource = "server"\nexpr = "p(99) < 250"\n')
    argv = ["load", "run", "--guardrails", str(rules), "--url", "http://127.0.0.1:1",
            "--no-audit", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    assert "no bucket bound at 250 ms" in capsys.readouterr().err


def test_overload_takes_its_capacity_from_a_stress_run(parsed, tmp_path):
    (tmp_path / "summary.json").write_text('{"knee": {"found": true, "rps": 180.5}}')
    argv = ["load", "run", "--profile", "overload", "--capacity", str(tmp_path)]
    assert main(argv) == 2  # stopped where the shape is built
    assert parsed["capacity_rps"] == 180.5


def test_a_capacity_for_another_profile_is_a_usage_error(capsys):
    assert main(["load", "run", "--profile", "steady", "--capacity", "100"]) == 2
    assert "only the overload profile" in capsys.readouterr().err


def test_a_stack_start_that_fails_part_way_is_stopped(no_locust, monkeypatch, tmp_path, capsys):
    downs: list = []

    class _FailsHalfway:
        """Nothing running; the start fails after some of the stack came up."""

        def __init__(self, state_dir):
            self.state_dir = state_dir

        def status(self):
            return [{"name": "api", "state": "stopped"}]

        def up(self, log=print):
            raise load_command.StackError("relay did not get ready")

        def down(self, log=print):
            downs.append("down")

    monkeypatch.setattr(load_command, "Stack", _FailsHalfway)
    argv = ["load", "run", "--state-dir", str(tmp_path / "s"), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "relay did not get ready" in capsys.readouterr().err
    assert downs == ["down"]


def test_load_run_repeats_what_locust_noted_it_ignored_or_left_out(tmp_path, capsys):
    """Plain Locust logs them; `load run` kept them in locust.log, unseen beside the breaches."""
    (tmp_path / "locust.log").write_text(
        "[2026-12-07 17:27:06,847] vm/INFO/reco.load: profile smoke: 2 users\n"
        "[2026-12-07 17:27:06,847] vm/WARNING/reco.load.notes: 2 user(s) leave EventWriter,"
        " StatusPoller out of the mix\n"
        "[2026-12-07 17:27:07,001] vm/WARNING/reco.load: metrics scrape of x failed\n"
    )
    load_command._echo_notes({}, tmp_path)
    out = capsys.readouterr().out
    assert "warning: 2 user(s) leave EventWriter, StatusPoller out of the mix\n" in out
    assert "scrape" not in out
