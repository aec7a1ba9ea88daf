"""Checks of the locustfile's options that need no Locust (unit-testable without its patching)."""

from __future__ import annotations

from typing import Any


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
    return problems


def peak_users(opts: Any, given: int | None) -> int | None:
    """The shape's peak users: -u as given (None: the profile's), or the web UI form's value.

    Headless and ``--autostart`` runs start without the form, and Locust fills in 1 for a
    missing -u there: ``given`` is -u as read before that.
    """
    if opts.headless or opts.autostart:
        return given
    return opts.num_users
