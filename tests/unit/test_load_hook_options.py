"""Plain `locust` with the project's locustfile: numbers it cannot use, -u under --autostart, and
the web UI's start form."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loadtests.options import (
    ignored,
    master_ports,
    mix_note,
    peak_users,
    swarm_problems,
    unused_dir,
    usage_problems,
)


def _opts(**changes) -> SimpleNamespace:
    values = {
        "num_users": None, "run_time": None, "user_rps": 0.0, "request_timeout": 5.0,
        "replay_ratio": 0.05, "headless": False, "autostart": False, "profile": "smoke",
        "spawn_rate": None, "exit_code_on_error": 1, "guardrails": "", "tags": None,
        "reset_stats": False, "retry_budget": 0.2, "retry_floor": 1.0,
    }  # fmt: skip
    return SimpleNamespace(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"run_time": 0}, "-t/--run-time must be at least 1 s"),
        ({"num_users": 0}, "-u/--users must be at least 1"),
        ({"user_rps": -1.0}, "--user-rps must be at least 0"),
        ({"request_timeout": -1.0}, "--request-timeout must be positive"),
        ({"replay_ratio": 1.5}, "--replay-ratio must be between 0 and 1"),
        ({"retry_budget": -0.1}, "--retry-budget must be between 0 and 1000"),
        ({"retry_budget": 1001.0}, "--retry-budget must be between 0 and 1000"),
        ({"retry_budget": float("nan")}, "--retry-budget must be between 0 and 1000"),
        ({"retry_floor": -1.0}, "--retry-floor must be a finite number of retries/s"),
        ({"retry_floor": float("inf")}, "--retry-floor must be a finite number of retries/s"),
    ],
)
def test_numbers_a_run_cannot_use_are_usage_problems(changes, said):
    """Zero used to mean "not given": -t 0 ran the profile's full length and passed."""
    problems = usage_problems(_opts(**changes))
    assert len(problems) == 1 and problems[0].startswith(said)


def test_the_defaults_and_the_smallest_values_pass():
    assert usage_problems(_opts()) == []
    assert usage_problems(_opts(num_users=1, run_time=1, replay_ratio=1.0)) == []
    # No retry at all beyond the first attempt, and Finagle's largest ratio.
    assert usage_problems(_opts(retry_budget=0.0, retry_floor=0.0)) == []
    assert usage_problems(_opts(retry_budget=1000.0)) == []


@pytest.mark.parametrize(
    ("mode", "given", "peak"),
    [
        ({"autostart": True}, None, None),  # the profile's, not the 1 Locust fills in
        ({"autostart": True}, 3, 3),
        ({"headless": True}, None, None),
        ({}, None, 1),  # started from the web UI: the form's value
    ],
)
def test_autostart_takes_users_as_given_like_headless(mode, given, peak):
    assert peak_users(_opts(num_users=1, **mode), given) == peak


def _form(**changes: str) -> dict[str, str]:
    """The web UI's start form with the defaults its page offers (0: the profile's rate)."""
    form = {"user_count": "4", "spawn_rate": "1", "run_time": "", "profile": "smoke",
            "user_rps": "0.0", "request_timeout": "5.0", "replay_ratio": "0.05",
            "retry_budget": "0.2", "retry_floor": "1.0", "capacity": ""}  # fmt: skip
    return {**form, **changes}


def test_the_start_form_with_its_defaults_can_run():
    assert swarm_problems(_form(), _opts()) == []
    assert swarm_problems(_form(profile="", user_rps="1.5", run_time="1m"), _opts()) == []


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"profile": "nope"}, "unknown profile 'nope'"),
        ({"user_rps": "-1"}, "--user-rps must be at least 0"),
        ({"user_rps": "fast"}, "user rps: 'fast' is not a number"),
        ({"user_count": "0"}, "-u/--users must be at least 1"),
        ({"run_time": "0s"}, "-t/--run-time must be at least 1 s"),
        ({"replay_ratio": "2"}, "--replay-ratio must be between 0 and 1"),
        ({"retry_budget": "-1"}, "--retry-budget must be between 0 and 1000"),
        ({"retry_floor": "many"}, "retry floor: 'many' is not a number"),
        ({"capacity": "-5"}, "capacity: capacity must be positive"),
    ],
)
def test_a_start_form_the_run_cannot_use_is_refused_naming_the_value(changes, said):
    """Locust hands a shape run's form over unchecked: these failed inside the shape (HTTP 500)."""
    problems = swarm_problems(_form(**changes), _opts())
    assert len(problems) == 1 and problems[0].startswith(said), problems


def test_the_class_picker_must_pick_the_profile_shape():
    assert "ProfileShape" in swarm_problems(_form(shape_class="Default"), _opts(), picker=True)[0]
    assert "ProfileShape" in swarm_problems(_form(), _opts(), picker=True)[0]  # its default
    assert swarm_problems(_form(shape_class="ProfileShape"), _opts(), picker=True) == []


def test_an_unused_dir_never_takes_an_existing_one(tmp_path):
    first = unused_dir(tmp_path / "20261207T170000Z-smoke")
    assert first == tmp_path / "20261207T170000Z-smoke"
    first.mkdir()
    second = unused_dir(tmp_path / "20261207T170000Z-smoke")
    assert second == tmp_path / "20261207T170000Z-smoke-2"


def test_options_a_profile_run_ignores_are_named():
    """-r, --exit-code-on-error, --reset-stats and LOCUST_<option> were taken without a word."""
    warnings, refused = ignored(
        _opts(spawn_rate=5.0, exit_code_on_error=0, reset_stats=True),
        {
            "LOCUST_USER_RPS": "1",
            "LOCUST_REPLAY_RATIO": "0",
            "LOCUST_HOST": "x",
            "LOCUST_RETRY_BUDGET": "0",
        },
    )
    assert refused == []
    assert warnings == [
        "-r/--spawn-rate 5 is ignored: the profile's stages set it",
        "--exit-code-on-error 0 is ignored: the guardrail verdict sets the exit code"
        " (--guardrails off leaves it to Locust)",
        "--reset-stats resets Locust's own statistics only: the timeline and the verdict keep"
        " every request of the test (the guardrails' warm-up is what leaves the ramp out)",
        "LOCUST_USER_RPS is not read: this locustfile takes RECO_USER_RPS or --user-rps",
        "LOCUST_REPLAY_RATIO is not read: this locustfile takes --replay-ratio (or"
        " replay-ratio in a --config file)",
        "LOCUST_RETRY_BUDGET is not read: this locustfile takes --retry-budget (or"
        " retry-budget in a --config file)",
    ]
    assert ignored(_opts(exit_code_on_error=0, guardrails="off"), {}) == ([], [])
    assert ignored(_opts(), {}) == ([], [])


def test_tags_are_refused_as_no_task_carries_one():
    """Every user started without a task: a traceback per user, then exit 2 at the end."""
    _, refused = ignored(_opts(tags=["read"]), {})
    assert len(refused) == 1 and refused[0].startswith("--tags read: no task carries a tag")


# The order Locust hands out users of weights 7 (reader), 2 (writer) and 1 (poller).
ORDER = ["Reader", "Reader", "Writer", "Reader", "Poller", "Reader", "Reader", "Writer"]
CLASSES = {"Reader", "Writer", "Poller"}


def test_a_peak_too_small_for_the_mix_names_the_classes_it_leaves_out():
    """At -u 1 or 2 no writer ran: every write rule breached with "no data", unexplained."""
    note = mix_note(iter(ORDER), CLASSES, 2)
    assert note == (
        "2 user(s) leave Poller, Writer out of the mix: their requests are not made and the"
        " rules on them have no data (a breach); 5 users run every class"
    )
    assert mix_note(iter(ORDER), CLASSES, 4).startswith("4 user(s) leave Poller out")


def test_a_peak_that_runs_every_class_or_the_chosen_ones_says_nothing():
    assert mix_note(iter(ORDER), CLASSES, 5) is None
    assert mix_note(iter(ORDER), CLASSES, 400) is None
    assert mix_note(iter(["Reader"] * 3), {"Reader"}, 1) is None  # only readers were chosen


@pytest.mark.parametrize(
    ("given", "ports"),
    [
        ({"processes": 2}, (40001, 40001)),  # one free port, for the master and its workers
        ({"processes": 2, "master_bind_port": 6001}, (6001, 6001)),
        ({"processes": 2, "master_port": 6002}, (6002, 6002)),
        ({"processes": 2, "master_bind_port": 6001, "master_port": 6002}, (6001, 6002)),
        ({"processes": 2, "worker": True}, (5557, 5557)),  # its master is elsewhere
        ({}, (5557, 5557)),  # --master or --worker on its own: Locust's port, where both look
        ({"master_bind_port": 6001}, (6001, 5557)),
    ],
)
def test_master_ports_a_free_one_for_processes_else_as_given_or_locusts(given, ports):
    opts = SimpleNamespace(
        **{"processes": None, "worker": False, "master_bind_port": None, "master_port": None,
           **given}
    )  # fmt: skip
    master_ports(opts, lambda: 40001)
    assert (opts.master_bind_port, opts.master_port) == ports
