"""Load profiles as pure shapes: ``tick(run_time) -> (users, spawn_rate) | None``, no Locust.

Offered load is ``users x user_rps``: every user paces itself with constant throughput, so the
achieved RPS can be compared with what the shape asked for (coordinated omission check).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Tick = tuple[int, float] | None


@dataclass(frozen=True)
class Stage:
    """Hold ``users`` until ``end`` seconds after the start, reaching them at ``spawn_rate``/s."""

    end: float
    users: int
    spawn_rate: float


@dataclass
class StagedShape:
    """A sequence of stages, plus the named phases the guardrails can judge separately."""

    name: str
    stages: list[Stage]
    user_rps: float
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.stages[-1].end if self.stages else 0.0

    def tick(self, run_time: float) -> Tick:
        """The target for this moment, or None once the last stage is over."""
        for stage in self.stages:
            if run_time < stage.end:
                return stage.users, stage.spawn_rate
        return None

    def offered_rps(self, users: int) -> float:
        return users * self.user_rps


@dataclass
class OverloadShape(StagedShape):
    """Nominal load, then twice the capacity, then nominal again; goodput is judged on C."""

    capacity_rps: float = 0.0


@dataclass(frozen=True)
class Step:
    """What one stress step achieved, judged after its users settled."""

    step: int
    users: int
    offered_rps: float
    achieved_rps: float
    p99_ms: float | None
    error_ratio: float


@dataclass
class StressShape:
    """Ramp in equal steps until a step breaks the SLO; the last good step is the knee."""

    max_users: int
    user_rps: float
    steps: int = 20
    step_s: float = 15.0
    p99_ms: float = 300.0
    error_ratio: float = 0.001
    throughput_ratio: float = 0.9
    name: str = "stress"
    observed: list[Step] = field(default_factory=list)
    broken: Step | None = None
    reason: str | None = None

    @property
    def duration(self) -> float:
        return self.steps * self.step_s

    @property
    def phases(self) -> dict[str, tuple[float, float]]:
        return {
            f"step {i + 1}": (i * self.step_s, (i + 1) * self.step_s) for i in range(self.steps)
        }

    def users_at(self, step: int) -> int:
        return max(1, math.ceil(self.max_users * (step + 1) / self.steps))

    def step_of(self, run_time: float) -> int:
        return int(run_time // self.step_s)

    def judge_window(self, step: int) -> tuple[float, float]:
        """Seconds after the start to judge a step on: its second half, after the ramp."""
        start = step * self.step_s
        return start + self.step_s / 2, start + self.step_s

    def tick(self, run_time: float) -> Tick:
        """Hold each step's users; stop once a step broke the SLO or every step was judged.

        The last step is held until it has been judged (its data arrives a little late).
        """
        if self.broken is not None or len(self.observed) >= self.steps:
            return None
        if run_time >= self.duration + self.step_s:
            return None  # never judged (no data at all): give up rather than run forever
        step = min(self.step_of(run_time), self.steps - 1)
        spawn = max(1.0, (self.users_at(step) - (self.users_at(step - 1) if step else 0)) / 2.0)
        return self.users_at(step), spawn

    def due(self, run_time: float, lag_s: float) -> int | None:
        """The next step whose judge window has fully arrived, if any."""
        step = len(self.observed)
        if (
            self.broken is None
            and step < self.steps
            and run_time >= self.judge_window(step)[1] + lag_s
        ):
            return step
        return None

    def offered_rps(self, users: int) -> float:
        return users * self.user_rps

    def observe(self, result: Step) -> bool:
        """Record a finished step; return False (and stop ramping) if it broke the SLO."""
        self.observed.append(result)
        reasons = []
        if result.p99_ms is not None and result.p99_ms > self.p99_ms:
            reasons.append(f"p99 {result.p99_ms:.0f} ms > {self.p99_ms:g} ms")
        if result.error_ratio > self.error_ratio:
            reasons.append(f"error ratio {result.error_ratio:.4f} > {self.error_ratio:g}")
        if result.offered_rps and result.achieved_rps < self.throughput_ratio * result.offered_rps:
            reasons.append(
                f"achieved {result.achieved_rps:.1f} rps < {self.throughput_ratio:g} x offered "
                f"{result.offered_rps:.1f} rps"
            )
        if reasons and self.broken is None:
            self.broken, self.reason = result, "; ".join(reasons)
        return not reasons

    def knee(self) -> dict:
        """The highest step that held the SLO (``found`` is False if none broke it)."""
        good = [s for s in self.observed if self.broken is None or s.step < self.broken.step]
        best = good[-1] if good else None
        reason = self.reason or "SLO held up to the last step: raise --users to find the knee"
        if self.broken is not None and best is None:
            # No step held, so there is no knee to report: say where to look for it instead.
            reason = (
                f"the first step ({self.broken.users} users) already broke the SLO: {reason};"
                " the knee lies below it: lower --users (steps are --users / "
                f"{self.steps} apart)"
            )
        return {
            "found": self.broken is not None,
            "users": best.users if best else None,
            "rps": round(best.achieved_rps, 2) if best else None,
            "offered_rps": round(best.offered_rps, 2) if best else None,
            "p99_ms": best.p99_ms if best else None,
            "broken_at": None if self.broken is None else self.broken.__dict__,
            "reason": reason,
        }


@dataclass(frozen=True)
class Profile:
    """A named load profile: what it is for, its default size and how to build its shape."""

    name: str
    purpose: str
    users: int
    duration_s: float
    user_rps: float
    build: Callable[[int, float, float], StagedShape | StressShape]


def _ramp(users: int, seconds: float) -> float:
    return max(1.0, users / max(seconds, 1.0))


def smoke(users: int, duration: float, user_rps: float) -> StagedShape:
    ramp = min(2.0, duration / 4)
    return StagedShape(
        "smoke", [Stage(duration, users, _ramp(users, ramp))], user_rps,
        {"ramp": (0.0, ramp), "plateau": (ramp, duration)},
    )  # fmt: skip


def steady(users: int, duration: float, user_rps: float, name: str = "steady") -> StagedShape:
    ramp = min(30.0, duration / 10)
    return StagedShape(
        name, [Stage(duration, users, _ramp(users, ramp))], user_rps,
        {"ramp": (0.0, ramp), "plateau": (ramp, duration)},
    )  # fmt: skip


def soak(users: int, duration: float, user_rps: float) -> StagedShape:
    ramp = min(60.0, duration / 10)
    shape = StagedShape(
        "soak", [Stage(duration, users, _ramp(users, ramp))], user_rps,
        {"ramp": (0.0, ramp), "plateau": (ramp, duration)},
    )  # fmt: skip
    # Leaks show as drift: compare the first 15 minutes after warm-up with the last 15.
    window = min(900.0, (duration - ramp) / 3)
    shape.phases["early"] = (ramp, ramp + window)
    shape.phases["late"] = (duration - window, duration)
    return shape


def step(users: int, duration: float, user_rps: float, steps: int = 5) -> StagedShape:
    length = duration / steps
    stages: list[Stage] = []
    phases: dict[str, tuple[float, float]] = {}
    for i in range(steps):
        target = max(1, math.ceil(users * (i + 1) / steps))
        increase = target - (stages[-1].users if stages else 0)
        stages.append(Stage((i + 1) * length, target, _ramp(increase, min(5.0, length / 4))))
        phases[f"step {i + 1}"] = (i * length, (i + 1) * length)
    return StagedShape("step", stages, user_rps, phases)


def spike(users: int, duration: float, user_rps: float) -> StagedShape:
    """Baseline at a third of the peak, 0 -> 3x in 10 s, hold, then back to baseline."""
    base = max(1, users // 3)
    ramp = min(10.0, duration / 10)
    spike_start = duration / 3
    spike_end = spike_start + min(60.0, duration / 6)
    settle = min(30.0, (duration - spike_end) / 2)  # SLO must be back within 30 s
    stages = [
        Stage(spike_start, base, _ramp(base, ramp)),
        Stage(spike_end, users, max(1.0, (users - base) / 10.0)),
        Stage(duration, base, float(users)),
    ]
    phases = {
        "baseline": (ramp, spike_start),
        "spike": (spike_start, spike_end),
        "settle": (spike_end, spike_end + settle),
        "recovery": (spike_end + settle, duration),
    }
    return StagedShape("spike", stages, user_rps, phases)


NOMINAL_SHARE = 0.6  # nominal load R = 0.6 x capacity (reliability spec 4.2)


def overload(users: int, duration: float, user_rps: float) -> OverloadShape:
    """R = 0.6 C, then 2 C (``users`` at peak) for most of the run, then back to R.

    Spec 4.2 step 4: 5 min at 2 C by default; the SLO must be back within 30 s of the drop
    (``settle``), judged on ``recovery``.
    """
    capacity = users * user_rps / 2
    nominal = max(1, round(NOMINAL_SHARE * capacity / user_rps))
    base = settle = min(30.0, duration / 7)
    recovery = min(60.0, duration / 7)
    start, end = base, duration - settle - recovery
    stages = [
        Stage(start, nominal, _ramp(nominal, base / 2)),
        Stage(end, users, max(1.0, (users - nominal) / 5.0)),  # 2 C within 5 s
        Stage(duration, nominal, float(users)),
    ]
    phases = {
        "baseline": (base / 2, start),
        "overload": (min(start + 5.0, end), end),  # at 2 C: after the 5 s ramp
        "settle": (end, end + settle),
        "recovery": (end + settle, duration),
    }
    return OverloadShape("overload", stages, user_rps, phases, capacity_rps=capacity)


def overload_users(capacity_rps: float, user_rps: float) -> int:
    """Peak users that offer twice ``capacity_rps`` at ``user_rps`` each."""
    return max(1, math.ceil(2 * capacity_rps / user_rps))


def capacity_of(text: str) -> float:
    """Capacity in requests/s: a number, or a stress run directory (its knee's achieved rps)."""
    try:
        value = float(text)
    except ValueError:
        value = _knee_rps(text)
    if not value > 0:
        raise ValueError(f"capacity must be positive, got {text!r}")
    return value


def _knee_rps(run_dir: str) -> float:
    summary = Path(run_dir) / "summary.json"
    try:
        knee = json.loads(summary.read_text(encoding="utf-8")).get("knee") or {}
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"capacity {run_dir!r}: not a number of requests/s nor a stress run ({exc})"
        ) from None
    if not knee.get("rps"):
        why = f" ({knee['reason']})" if knee.get("reason") else ""
        raise ValueError(f"capacity {run_dir!r}: {summary} records no stress knee{why}")
    if knee.get("found") is not True:
        # The SLO held up to the last step: its rps is a lower bound, and twice a lower bound
        # may not overload anything.
        raise ValueError(
            f"capacity {run_dir!r}: that stress run never broke its SLO ({knee['rps']} rps is a"
            " lower bound); run stress with more users, or give the capacity as a number"
        )
    return float(knee["rps"])


STRESS_STEPS, STRESS_MIN_STEP_S = 20, 4.0


def stress(users: int, duration: float, user_rps: float) -> StressShape:
    """Up to 20 equal steps in ``duration``: a short run takes fewer steps, never more time.

    A step is judged on its second half, so none is shorter than 4 s (a 20 s run has 5).
    """
    steps = max(1, min(STRESS_STEPS, int(duration // STRESS_MIN_STEP_S)))
    return StressShape(users, user_rps, steps=steps, step_s=duration / steps)


# Default sizes (docs/load.md): R = 60 users x 2 rps = 120 rps, about 0.6 x the knee (~200
# rps) the stress profile found for the whole stack on a 2-core machine, and far below the
# generator's own capacity (~3k rps per core for this user mix).
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "prove the stack answers under light load (CI, README)", 10, 15, 2, smoke),
        Profile("steady", "sustained nominal load R; the 'load held' gate", 60, 600, 2, steady),
        Profile("step", "ramp in five stages to see where latency bends", 100, 300, 2, step),
        Profile("spike", "R -> 3R in 10 s, then back; shedding and recovery", 180, 180, 2, spike),
        Profile("soak", "hours at R: leaks, pool exhaustion, drift", 60, 7200, 2, soak),
        Profile("stress", "ramp until p99 or errors break the SLO; the knee", 400, 300, 2, stress),
        Profile(
            "overload", "2 x capacity for 5 min, then nominal: goodput, sheds, recovery",
            400, 420, 1, overload,
        ),
    )
}  # fmt: skip


DEFAULT_PROFILE = "smoke"  # without --profile or RECO_LOAD_PROFILE


def profile_named(name: str) -> Profile:
    """The profile called ``name``; ValueError naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}") from None


def build(
    name: str,
    users: int | None = None,
    duration: float | None = None,
    user_rps: float | None = None,
    capacity_rps: float | None = None,
) -> StagedShape | StressShape:
    """Build a profile's shape, scaled to ``users`` (peak) and ``duration`` when given.

    ``capacity_rps`` sizes the overload profile (its peak offers twice that) instead of users.
    """
    profile = profile_named(name)
    duration = profile.duration_s if duration is None else duration
    rate = profile.user_rps if user_rps is None else user_rps
    if capacity_rps is not None:
        if name != "overload":
            raise ValueError("a capacity sizes only the overload profile")
        if capacity_rps <= 0 or rate <= 0:
            raise ValueError("capacity and user rate must be positive")
        users = overload_users(capacity_rps, rate)
    users = profile.users if users is None else users
    if users < 1 or duration <= 0 or rate <= 0:
        raise ValueError("users, duration and user rate must be positive")
    shape = profile.build(users, float(duration), float(rate))
    if capacity_rps is not None and isinstance(shape, OverloadShape):
        shape.capacity_rps = capacity_rps  # the peak users round 2 C up
    return shape
