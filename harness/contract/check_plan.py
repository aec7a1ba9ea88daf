"""Which Schemathesis checks a contract run calls, and which of them cannot judge anything.

Schemathesis records a result for every check it calls on a response, also for a check that
had nothing to judge by: `object_level_authorization` without two identities returns at once,
and `max_response_time` without a limit below the request timeout holds responses to nothing
the timeout does not. Both read as passed; contract.json lists them as not run, with the reason
taken from the configuration `st run` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

from harness.contract.config import PEER_API_KEY_ENV, st_config
from harness.contract.paths import CONFIG_PATH

MAX_RESPONSE_TIME = "max_response_time"
OBJECT_LEVEL_AUTHORIZATION = "object_level_authorization"
NO_RESULT = "no result recorded: no response of this run reached it"


@dataclasses.dataclass(frozen=True)
class CheckPlan:
    """The checks Schemathesis calls on each response, and the reasons some judge nothing."""

    called: tuple[str, ...]
    cannot_judge: Mapping[str, str]

    def not_run(self, recorded: Set[str], failed: Set[str]) -> dict[str, str]:
        """Checks that judged nothing, given the names with results and those that failed."""
        # A check that reported a failure judged something, whatever the configuration says.
        reasons = {name: why for name, why in self.cannot_judge.items() if name not in failed}
        for name in self.called:
            if name not in recorded:
                reasons.setdefault(name, NO_RESULT)
        return dict(sorted(reasons.items()))


def plan(
    api_key: str,
    checks: Sequence[str],
    request_timeout_s: float,
    config_path: Path = CONFIG_PATH,
) -> CheckPlan:
    """The plan of `st run --config-file CONFIG_PATH --checks CHECKS --request-timeout ...`."""
    config = st_config(api_key, config_path)
    config.projects.override.checks.update(included_check_names=list(checks))
    project = config.projects.get_default()
    reasons = {
        OBJECT_LEVEL_AUTHORIZATION: _without_peers(project, config_path.name),
        MAX_RESPONSE_TIME: _without_limit(project, request_timeout_s, config_path.name),
    }
    called = _called(project.checks)
    return CheckPlan(
        called=called,
        cannot_judge={name: why for name, why in reasons.items() if why and name in called},
    )


def _called(checks: Any) -> tuple[str, ...]:
    """The checks Schemathesis calls on each response under ``checks`` (as its CheckContext)."""
    import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks
    from schemathesis.checks import CHECKS

    names = [
        check.__name__
        for check in CHECKS.get_all()
        if not isinstance(check, type) and checks.get_by_name(name=check.__name__).enabled
    ]
    if checks.max_response_time.enabled:
        names.append(MAX_RESPONSE_TIME)
    return tuple(sorted(names))


def _without_peers(project: Any, config_name: str) -> str | None:
    """Why object_level_authorization cannot judge: no second identity to compare with."""
    # It replays one identity's reads of its own objects as another identity, and only among
    # peers (Schemathesis refuses a list of fewer than two).
    wfc = project.auth.wfc
    if wfc is not None and wfc.peers:
        return None
    if wfc is not None:
        has = "[auth.wfc] without peers"
    elif project.auth.openapi.is_defined:
        has = "one API key, --api-key"
    else:
        has = "no API key"
    return (
        f"needs a second API key: --peer-api-key (${PEER_API_KEY_ENV}), or two identities "
        f"listed as peers under [auth.wfc] in {config_name} (this run: {has})"
    )


def _without_limit(project: Any, request_timeout_s: float, config_name: str) -> str | None:
    """Why max_response_time cannot judge: its limit is no shorter than the request timeout."""
    from schemathesis.checks import DEFAULT_MAX_RESPONSE_TIME

    configured = project.checks.max_response_time.limit
    limit = DEFAULT_MAX_RESPONSE_TIME if configured is None else configured
    if limit < request_timeout_s:
        return None
    source = (
        f"Schemathesis' default: no [checks] max_response_time in {config_name}"
        if configured is None
        else f"[checks] max_response_time in {config_name}"
    )
    return (
        f"its limit, {limit:g} s ({source}), is not below the request timeout, "
        f"{request_timeout_s:g} s (--request-timeout): a response that slow times out first"
    )
