"""Checks of the locustfile's options that need no Locust (unit-testable without its patching)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from loadtests import retrybudget, shapes

# The locustfile's own options and the environment variable each reads, if any (the hooks
# declare them from here; Locust's LOCUST_<option> names are not read for these).
ENV_VARS = {"run_dir": "RECO_RUN_DIR", "guardrails": "RECO_GUARDRAILS",
            "user_rps": "RECO_USER_RPS", "api_key": "RECO_API_KEY", "capacity": "RECO_CAPACITY",
            "profile": "RECO_LOAD_PROFILE", "request_timeout": None, "metrics_url": None,
            "replay_ratio": None, "retry_budget": None, "retry_floor": None}  # fmt: skip
RESET_STATS = (
    "--reset-stats resets Locust's own statistics only: the timeline and the verdict keep every"
    " request of the test (the guardrails' warm-up is what leaves the ramp out)"
)
# Locust's own master port: where a --worker started on its own looks for its master.
LOCUST_MASTER_PORT = 5557
# The web UI form's number fields, parsed as the command line parses them.
FORM_NUMBERS = {"user_count": ("num_users", int), "user_rps": ("user_rps", float),
                "request_timeout": ("request_timeout", float),
                "replay_ratio": ("replay_ratio", float),
                "retry_budget": ("retry_budget", float),
                "retry_floor": ("retry_floor", float)}  # fmt: skip


def usage_problems(opts: Any) -> list[str]:
    """What a run cannot use, as `reco-harness load run` refuses it.

    Zero would otherwise read as "not given" (the profile's default: a 10-minute steady run
    for ``-t 0``), and a negative rate or timeout failed later with a traceback.
    """
    problems = []
    if opts.num_users is not None and opts.num_users < 1:
        problems.append(f"-u/--users must be at least 1 (got {opts.num_users})")
    if opts.run_time is not None and opts.run_time < 1:
        problems.append("-t/--run-time must be at least 1 s")
    if opts.user_rps < 0:
        problems.append(f"--user-rps must be at least 0 (0: the profile's; got {opts.user_rps})")
    if opts.request_timeout <= 0:
        problems.append(f"--request-timeout must be positive (got {opts.request_timeout})")
    if not 0 <= opts.replay_ratio <= 1:
        problems.append(f"--replay-ratio must be between 0 and 1 (got {opts.replay_ratio})")
    return problems + retry_problems(opts)


def retry_problems(opts: Any) -> list[str]:
    """Budget settings the retry budget cannot take (NaN and infinity included)."""
    problems = []
    if not 0 <= opts.retry_budget <= retrybudget.MAX_RATIO:
        problems.append(
            f"--retry-budget must be between 0 and {retrybudget.MAX_RATIO:g} (retries per first"
            f" attempt; got {opts.retry_budget})"
        )
    if not 0 <= opts.retry_floor < math.inf:
        problems.append(
            f"--retry-floor must be a finite number of retries/s, at least 0"
            f" (got {opts.retry_floor})"
        )
    return problems


def ignored(opts: Any, environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Options Locust takes that this locustfile does not use: (warnings, refusals).

    The profile decides the spawn rate and the verdict the exit code; Locust would take them
    without a word, and a run with ``--tags`` started users with no task at all.
    """
    warnings, refusals = [], []
    if getattr(opts, "spawn_rate", None) is not None:
        warnings.append(
            f"-r/--spawn-rate {opts.spawn_rate:g} is ignored: the profile's stages set it"
        )
    gated = (getattr(opts, "guardrails", "") or "").lower() != "off"
    if gated and getattr(opts, "exit_code_on_error", 1) != 1:
        warnings.append(
            f"--exit-code-on-error {opts.exit_code_on_error} is ignored: the guardrail verdict"
            " sets the exit code (--guardrails off leaves it to Locust)"
        )
    if getattr(opts, "reset_stats", False):
        warnings.append(RESET_STATS)
    if getattr(opts, "tags", None):
        refusals.append(
            f"--tags {' '.join(opts.tags)}: no task carries a tag, so no user would have a task;"
            " pick users by class name instead"
        )
    for dest, read in ENV_VARS.items():
        name = f"LOCUST_{dest.upper()}"
        if name in environ:
            flag = "--" + dest.replace("_", "-")
            instead = f"{read} or {flag}" if read else f"{flag} (or {flag[2:]} in a --config file)"
            warnings.append(f"{name} is not read: this locustfile takes {instead}")
    return warnings, refusals


def warmup_note(duration_s: float, warmup_s: float) -> str | None:
    """Why a run no longer than the warm-up cannot pass: its phase ``run`` holds nothing."""
    if warmup_s <= 0 or duration_s > warmup_s:
        return None
    return (
        f"the run lasts {duration_s:g} s, no longer than the guardrails' {warmup_s:g} s warm-up:"
        " the rules judged on the phase 'run' will have no data (a breach); run longer"
    )


def mix_note(order: Iterable[str | None], classes: set[str], peak: int) -> str | None:
    """Which user classes ``peak`` users leave out of the mix, and how many users run them all.

    ``order`` is the sequence Locust hands users out in (by weight). At -u 1 or 2 no
    EventWriter runs, so every write rule breached with "no data" and nothing said why.
    """
    seen: set[str] = set()
    for count, name in enumerate(order, start=1):
        if count > 10_000 or name is None:
            return None
        seen.add(name)
        if count == peak:
            left_out = classes - seen
            if not left_out:
                return None
        if seen >= classes and count > peak:
            return (
                f"{peak} user(s) leave {', '.join(sorted(left_out))} out of the mix: their"
                f" requests are not made and the rules on them have no data (a breach);"
                f" {count} users run every class"
            )
    return None


def peak_users(opts: Any, given: int | None) -> int | None:
    """The shape's peak users: -u as given (None: the profile's), or the web UI form's value.

    Headless and ``--autostart`` runs start without the form, and Locust fills in 1 for a
    missing -u there: ``given`` is -u as read before that.
    """
    if opts.headless or opts.autostart:
        return given
    return opts.num_users


def unused_dir(path: Path) -> Path:
    """``path`` resolved, or with ``-2``, ``-3``… when a directory of that name exists.

    Two web UI tests may start within one second: the second must not take the first's.
    """
    path, n = path.resolve(), 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def swarm_problems(form: Mapping[str, str], opts: Any, picker: bool = False) -> list[str]:
    """Why the web UI's start form cannot run, as the command line would refuse it.

    Locust hands a shape run's form to the shape unchecked: a bad value failed inside it
    (an HTTP 500, a shape greenlet dead, no outputs) instead of the form saying why.
    """
    if picker and form.get("shape_class", "Default") == "Default":
        return [
            "pick the shape class ProfileShape: the profile decides the load shape, and"
            " without it the run writes no timeline, history or verdict"
        ]
    profile = form.get("profile") or getattr(opts, "profile", None) or shapes.DEFAULT_PROFILE
    problems = []
    try:
        shapes.profile_named(profile)
    except ValueError as exc:
        problems.append(str(exc))
    values = copy.copy(opts)
    for field, (name, kind) in FORM_NUMBERS.items():
        text = (form.get(field) or "").strip()
        if not text:
            continue
        try:
            setattr(values, name, kind(text))
        except ValueError:
            problems.append(f"{field.replace('_', ' ')}: {text!r} is not a number")
    if re.fullmatch(r"(0+[hms]?)+", (form.get("run_time") or "").strip()):
        values.run_time = 0  # Locust takes it, and zero read as "the profile's length"
    problems += usage_problems(values)
    capacity = (form.get("capacity") or "").strip()
    if capacity:
        try:
            shapes.capacity_of(capacity)
        except ValueError as exc:
            problems.append(f"capacity: {exc}")
    return problems


def master_ports(opts: Any, pick: Callable[[], int]) -> None:
    """Fill in the master's ports left unset (None): one free port for ``--processes``.

    On Locust's 5557 a second run's master could not bind, and its forked workers joined the
    first run's master instead. The forked workers connect to --master-port, so a port named
    for either end serves both. A --master started on its own keeps 5557, where workers
    started on their own look for it.
    """
    named = [p for p in (opts.master_bind_port, opts.master_port) if p is not None]
    port = LOCUST_MASTER_PORT
    if opts.processes and not opts.worker:
        port = named[0] if named else pick()
    if opts.master_bind_port is None:
        opts.master_bind_port = port
    if opts.master_port is None:
        opts.master_port = port
