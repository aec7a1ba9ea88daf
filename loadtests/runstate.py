"""The state of one Locust process during a run (settings, timeline, scrapes, history)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.guardrails.prometheus import Snapshot
from harness.guardrails.timeline import Timeline
from loadtests.retrybudget import RetryBudget
from loadtests.workload import History


@dataclass
class RunState:
    """Everything the hooks and users share inside one Locust process."""

    run_dir: Path = Path("runs/latest")
    profile: str = "smoke"
    user_rps: float = 2.0
    api_key: str = "dev-key"  # noqa: S105 - the development key, refused by production
    max_attempts: int = 3
    backoff_cap_s: float = 5.0
    replay_ratio: float = 0.05
    retry_budget: RetryBudget = field(default_factory=RetryBudget)  # every retry asks it first
    request_start: bool = False  # send X-Request-Start, as a proxy in front would
    worker: str | None = None  # None: local runner or master
    metrics_url: str | None = None
    users_override: int | None = None  # -u as given on the command line
    default_run_dir: str | None = None  # the run directory made up for a test without one
    distributed: bool = False
    timeline: Timeline = field(default_factory=Timeline)
    scrapes: list[Snapshot] = field(default_factory=list)
    shape: Any = None
    t0: float | None = None  # unix time the shape started
    stopping: bool = False
    aborted: str | None = None
    interrupted: str | None = None  # the signal that ended the run before its shape did
    ruleset: Any = None
    rules_from: str | None = None  # the guardrail file the ruleset was loaded from ('off': none)
    scrape_failures: int = 0  # /metrics scrapes that failed during this test
    _history: History | None = None
    _process: psutil.Process | None = None

    def history(self) -> History:
        """This process's operation history (one file per worker, merged by the audit)."""
        if self._history is None:
            name = "history.jsonl" if self.worker is None else f"history-{self.worker}.jsonl"
            self._history = History(self.run_dir / name)
        return self._history

    def close_history(self) -> None:
        if self._history is not None:
            self._history.close()

    def process(self) -> psutil.Process:
        """This process, for its CPU reading: Locust forks its --processes after import."""
        if self._process is None or self._process.pid != os.getpid():
            self._process = psutil.Process()
        return self._process

    def begin(self, shape: Any) -> None:
        """Start a new test in the same process (the web UI can run several)."""
        self.shape = shape
        self.timeline = Timeline()
        self.scrapes = []
        self.scrape_failures = 0
        self.close_history()
        self._history = None  # a fresh history file for every test
        self.t0 = time.time()
        self.stopping = False
        self.aborted = None
        self.interrupted = None

    def phases(self, end: float | None = None) -> dict[str, tuple[float, float]]:
        """The shape's phases in unix time, clipped to the run so far."""
        if self.t0 is None:
            return {}
        end = time.time() if end is None else end
        out = {"all": (float(math.floor(self.t0)), end)}  # whole seconds: the timeline's grain
        for name, (a, b) in (getattr(self.shape, "phases", None) or {}).items():
            start, stop = self.t0 + a, min(self.t0 + b, end)
            if stop > start:
                out[name] = (start, stop)
        return out

    def window_edges(self, warmup_s: float = 0.0) -> list[float]:
        """Unix times where a server-side window starts or ends: warm-up's end, phase edges."""
        if self.t0 is None:
            return []
        edges = {math.floor(self.t0) + warmup_s} if warmup_s > 0 else set()
        for a, b in (getattr(self.shape, "phases", None) or {}).values():
            edges.update((self.t0 + a, self.t0 + b))
        return sorted(edges)


STATE = RunState()
