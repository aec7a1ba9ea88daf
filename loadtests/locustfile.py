"""Locust entry point for the reco API: realistic user mix, profiles and the guardrail gate.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000            # web UI
    locust -f loadtests/locustfile.py --host ... --headless --profile steady  # gated run

Custom options (also in the web UI): --profile, --run-dir, --guardrails, --user-rps,
--api-key, --request-timeout, --metrics-url, --replay-ratio, --retry-budget, --retry-floor;
`reco-harness load options` prints them with Locust's own (`locust --help` cannot).
-u/-t scale the profile's peak users and duration. The exit code is the guardrail verdict
(0 pass, 1 breach, 2 harness or configuration error, 3 invariant violated).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import loadtests  # noqa: F401 - installed (editable) or run from the repository root
except ImportError:  # `locust -f` only puts this file's folder on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import LoadTestShape

from loadtests import hooks
from loadtests.runstate import STATE
from loadtests.users import EventWriter, RecommendationReader, StatusPoller

__all__ = ["EventWriter", "ProfileShape", "RecommendationReader", "StatusPoller"]


class ProfileShape(LoadTestShape):
    """Drive users by the selected profile (pure logic in loadtests/shapes.py)."""

    use_common_options = True  # -u and -t scale the profile instead of being ignored

    def reset_time(self) -> None:
        super().reset_time()
        hooks.begin_shape(self.runner)

    def tick(self):
        if STATE.shape is None:
            hooks.begin_shape(self.runner)
        run_time = self.get_run_time()
        hooks.observe_stress(run_time)
        return STATE.shape.tick(run_time)
