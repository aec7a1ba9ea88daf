"""The experiment catalogue parses, covers the fault scenarios, and the ledger is durable."""

from __future__ import annotations

import json

import pytest

from chaos.experiment import ExperimentError, catalogue, load
from chaos.ledger import Ledger


def test_catalogue_covers_at_least_fourteen_scenarios():
    experiments = catalogue()
    scenarios = set()
    for e in experiments:
        if not e.negative_control:
            scenarios |= set(e.scenario.split("-")) if "-" in e.scenario else {e.scenario}
    assert len(scenarios) >= 14, sorted(scenarios)
    assert {e.name for e in experiments} >= {"db-down", "db-blackhole", "smoke-db-blip"}


def test_every_experiment_has_probes_load_and_faults():
    for e in catalogue():
        assert e.title and e.description and e.load_duration_s >= 10
        assert e.steps, e.name
        for step in e.steps:
            assert step.start_s + step.duration_s < e.load_duration_s, e.name


def test_negative_controls_name_a_switch_and_expect_exit_3():
    controls = [e for e in catalogue() if e.negative_control]
    assert len(controls) >= 3
    for e in controls:
        assert e.negative_control["switch"] and e.negative_control["expect_exit"] == 3


def test_scaling_shrinks_every_time():
    e = load_named("db-down").scaled(0.5)
    assert e.steps[0].start_s == 7.5 and e.steps[0].duration_s == 7.5


def load_named(name):
    from chaos.experiment import find

    return find(name)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('title = "t"\n', "description"),
        ('title = "t"\ndescription = "d"\n[[method]]\naction = "explode"\n', "method[0].action"),
        ('title = "t"\ndescription = "d"\nsurprise = 1\n', "unknown keys"),
        # A top-level key after [expect] belongs to [expect] in TOML: refused, not ignored.
        (
            'title = "t"\ndescription = "d"\n[expect]\ndlq = 0\nguardrails = "g.toml"\n',
            "expect: unknown keys ['guardrails']",
        ),
        ('title = "t"\ndescription = "d"\n[load]\nuser = 5\n', "load: unknown keys"),
        (
            'title = "t"\ndescription = "d"\n[[method]]\naction = "down"\n'
            'link = "api_postgres"\nstart = "soon"\nduration = "4s"\n',
            "method[0].start",
        ),
        # A misspelt key in a step or a probe must not read as its default (a 0 s fault).
        (
            'title = "t"\ndescription = "d"\n[[method]]\naction = "down"\n'
            'link = "api_postgres"\ndurat1on = "4s"\n',
            "method[0]: unknown keys ['durat1on']",
        ),
        (
            'title = "t"\ndescription = "d"\n[[method]]\naction = "process"\n'
            'target = "relay"\nmode = "kill"\nlink = "api_postgres"\n',
            "method[0]: unknown keys ['link']",
        ),
        (
            'title = "t"\ndescription = "d"\n[[steady_state.probes]]\ntype = "http"\n'
            'tolerance = 200\nbogus = 1\n[[method]]\naction = "alarm"\nduration = "4s"\n',
            "steady_state.probes[0]: unknown keys ['bogus']",
        ),
        ('title = "t"\ndescription = "d"\nmethod = 1\n', "method: must be an array"),
    ],
)
def test_malformed_experiments_name_file_and_key(tmp_path, body, where):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ExperimentError) as err:
        load(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_chaos_run_refuses_an_unknown_step_key_with_exit_2(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    # Unreachable external services: a run that got past the file would start nothing.
    monkeypatch.setenv("RECO_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/reco")
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")

    path = tmp_path / "typo.toml"
    path.write_text(
        'title = "t"\ndescription = "d"\n[[method]]\naction = "down"\n'
        'link = "api_postgres"\nbogus = 1\n'
    )
    assert main(["chaos", "run", str(path), "--state-dir", str(tmp_path / "stack")]) == 2
    assert "unknown keys ['bogus']" in capsys.readouterr().err


def test_ledger_reports_only_open_faults_newest_first(tmp_path):
    ledger = Ledger(tmp_path / "faults.ledger")
    first = ledger.opened({"action": "down", "link": "a"})
    ledger.opened({"action": "down", "link": "b"})
    ledger.closed(first)
    with open(ledger.path, "a") as handle:
        handle.write('{"id": "torn", "op": "app')  # a crash mid-write
    assert [f["link"] for _, f in ledger.open_entries()] == ["b"]
    entries = [json.loads(line) for line in ledger.path.read_text().splitlines()[:3]]
    assert [e["op"] for e in entries] == ["apply", "apply", "undo"]


@pytest.mark.parametrize(
    ("method", "where"),
    [
        # A target found wrong only when the fault is due fails the run mid-load.
        ('action = "down"\nstart = "5s"\nduration = "5s"\n', "method[0].link: missing"),
        (
            'action = "toxic"\nlink = "api_postgress"\ntype = "latency"\n'
            'start = "5s"\nduration = "5s"\n',
            "method[0].link: 'api_postgress'; must be one of api_postgres",
        ),
        (
            'action = "toxic"\nlink = "api_postgres"\ntype = "latency"\n'
            'attributes = { latency = "fast" }\nstart = "5s"\nduration = "5s"\n',
            "method[0].attributes.latency: must be a whole number",
        ),
        (
            'action = "toxic"\nlink = "api_postgres"\ntype = "lag"\nstart = "5s"\n'
            'duration = "5s"\n',
            "method[0].type: 'lag'; must be one of latency",
        ),
        (
            'action = "process"\ntarget = "relay"\nmode = "freeze"\nstart = "5s"\n',
            "method[0].mode: 'freeze'",
        ),
        # No duration would heal a lasting fault at once: a run that proves nothing.
        ('action = "down"\nlink = "api_postgres"\nstart = "5s"\n', "method[0].duration: required"),
        (
            'action = "process"\ntarget = "relay"\nmode = "pause"\nstart = "5s"\nduration = "0s"\n',
            "method[0].duration: must be more than 0 s",
        ),
        # Healed after the load ended, a fault's recovery is never observed under load.
        (
            'action = "down"\nlink = "api_postgres"\nstart = "8s"\nduration = "30s"\n',
            "method[0]: ends at 38 s, not before the load ends (20 s)",
        ),
        ('action = "poison"\nstart = "25s"\n', "method[0]: ends at 25 s"),
        # The first heal would re-enable the link while the second outage still reads as on.
        (
            'action = "down"\nlink = "api_postgres"\nstart = "5s"\nduration = "5s"\n'
            '[[method]]\naction = "down"\nlink = "api_postgres"\nstart = "8s"\nduration = "5s"\n',
            "method[1]: overlaps method[0] on down api_postgres",
        ),
        (
            'action = "process"\ntarget = "relay"\nmode = "pause"\nstart = "9s"\n'
            'duration = "5s"\n[[method]]\naction = "process"\ntarget = "relay"\nmode = "kill"\n'
            'start = "4s"\nduration = "5s"\n',
            "method[1]: overlaps method[0] on process relay",
        ),
    ],
)
def test_a_fault_that_cannot_run_as_written_is_refused_when_the_file_is_read(
    tmp_path, method, where
):
    path = tmp_path / "bad.toml"
    head = 'title = "t"\ndescription = "d"\n[load]\nduration = "20s"\n[[method]]\n'
    path.write_text(head + method)
    with pytest.raises(ExperimentError) as err:
        load(path)
    assert str(path) in str(err.value) and where in str(err.value)


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ('[load]\nusers = "many"\n', "load.users: must be a whole number of at least 1"),
        ("[load]\nusers = 0\n", "load.users"),
        ('[load]\nduration = "0s"\n', "load.duration: must be more than 0 s"),
        ("[expect]\ndlq = -1\n", "expect.dlq"),
    ],
)
def test_bad_load_or_expect_values_name_file_and_key(tmp_path, table, where):
    path = tmp_path / "bad.toml"
    path.write_text(f'title = "t"\ndescription = "d"\n{table}[[method]]\naction = "poison"\n')
    with pytest.raises(ExperimentError) as err:
        load(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_chaos_run_refuses_a_bad_load_value_with_exit_2(tmp_path, capsys):
    from harness.cli import main

    path = tmp_path / "users.toml"
    path.write_text(
        'title = "t"\ndescription = "d"\n[load]\nusers = "many"\n[[method]]\naction = "poison"\n'
    )
    # It once escaped as a ValueError traceback: exit 1, read as a guardrail breach.
    assert main(["chaos", "run", str(path), "--state-dir", str(tmp_path / "stack")]) == 2
    assert "load.users" in capsys.readouterr().err


GOOD = 'title = "t"\ndescription = "d"\n[load]\nprofile = "{profile}"\nduration = "30s"\n'
GOOD += '[[method]]\naction = "down"\nlink = "api_postgres"\nstart = "5s"\nduration = "4s"\n'


def test_validate_prints_the_plan_as_run_would_scale_it(tmp_path, capsys):
    from harness.cli import main

    path = tmp_path / "mine.toml"
    path.write_text(GOOD.format(profile="steady"))
    assert main(["chaos", "validate", str(path), "relay-kill", "--duration-scale", "0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "   load      steady, 10 users, 15 s" in out
    assert "   fault        2.5 s -    4.5 s  api_postgres down" in out
    assert out[-1] == "valid: 2 experiment(s)"
    assert any(line.startswith("== relay-kill: ") for line in out)


def test_validate_exits_2_on_a_bad_file_or_rule_file_and_starts_nothing(tmp_path, capsys):
    from harness.cli import main

    path = tmp_path / "typo.toml"
    path.write_text(GOOD.format(profile="stedy"))
    assert main(["chaos", "validate", str(path)]) == 2
    assert "load.profile" in capsys.readouterr().err
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nname = 'broken'\nexpr = 'count >='\n")
    path.write_text(GOOD.format(profile="steady"))  # it names no rule file: --guardrails judges
    assert main(["chaos", "validate", str(path), "--guardrails", str(rules)]) == 2
    assert str(rules) in capsys.readouterr().err
    assert not (tmp_path / "stack").exists() and not list(tmp_path.glob("runs*"))


def test_validate_all_reads_the_whole_catalogue(capsys):
    from harness.cli import main

    assert main(["chaos", "validate", "--all"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"valid: {len(catalogue())} experiment(s)"
