"""Experiment files: steady-state hypothesis, method (timed faults), load, guardrails.

The shape follows Chaos Toolkit (title, description, steady-state-hypothesis with probes and
tolerances, method, rollbacks that always run) and adds what it lacks: a load profile running
throughout, faults with start times and durations that may overlap, per-phase guardrails and
an end-to-end delivery audit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from chaos.actions import PROCESS_MODES, PROCESS_TARGETS, TOXICS
from harness.guardrails import parse_duration
from harness.stack.faults import LINKS

CATALOGUE = Path(__file__).with_name("experiments")
PHASE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ACTIONS = (
    "toxic",
    "down",
    "process",
    "unbind",
    "poison",
    "alarm",
    "lock",
    "migrate",
    "stall_commits",
    "clock",
)
PROBES = ("http", "backlog", "error_ratio", "p99_ms")
PROBE_KEYS = {"name", "type", "tolerance", "path"}
# Besides the action's own (ACTION_KEYS).
STEP_KEYS = {"action", "start", "duration", "label", "phase"}
ACTION_KEYS = {
    "toxic": {"link", "type", "stream", "toxicity", "attributes", "name"},
    "down": {"link"},
    "process": {"target", "mode"},
    "unbind": set(),
    "poison": {"count"},
    "alarm": set(),
    "lock": {"table", "rows", "name"},
    "migrate": {"runners"},
    "stall_commits": set(),
    "clock": {"offset"},
}
TOP_KEYS = {
    "title",
    "description",
    "tags",
    "scenario",
    "steady_state",
    "method",
    "load",
    "guardrails",
    "expect",
    "negative_control",
}
TABLE_KEYS = {  # a key outside these is a typo or a misplaced line: refuse, never ignore
    "load": {"profile", "users", "duration"},
    "steady_state": {"probes"},
    "expect": {"dlq"},
    "negative_control": {"switch", "expect_exit", "component"},
}


# Faults that last until healed: without a duration they would heal at once and prove nothing.
LASTING = {"toxic", "down", "unbind", "alarm", "lock", "stall_commits", "clock"}
LOCK_TABLES = ("item_popularity", "outbox")
# Phases every chaos run writes itself: a step's own phase may not take one of their names.
RUN_PHASES = ("run", "all", "baseline", "fault", "recovery", "settled")
MAX_CLOCK_OFFSET_S = 86400  # a day either way: beyond it a step tests a typo, not skew


class ExperimentError(ValueError):
    """An experiment file is malformed; the message names the file and the key."""


def _refuse_unknown(path: Path, where: str, raw: Any, allowed: set[str]) -> None:
    """Refuse a table that is not one, or holds a key outside ``allowed`` (a typo, never 0)."""
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")


@dataclasses.dataclass(frozen=True)
class Probe:
    """A steady-state check with its tolerance."""

    name: str
    type: str
    tolerance: Any
    path: str = "/readyz"


@dataclasses.dataclass(frozen=True)
class Step:
    """One fault of the method: what, when (seconds from load start) and for how long."""

    spec: dict[str, Any]
    start_s: float
    duration_s: float
    label: str
    phase: str | None = None  # a phase of its own in phases.json: the fault's window


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed experiment file."""

    name: str
    path: Path
    title: str
    description: str
    scenario: str
    tags: tuple[str, ...]
    probes: tuple[Probe, ...]
    steps: tuple[Step, ...]
    load_profile: str
    load_users: int
    load_duration_s: float
    guardrails: Path | None
    expected_dlq: int
    negative_control: dict[str, Any]

    @property
    def skews_clocks(self) -> bool:
        """Whether a step moves the wall clock of the apps (they run with the clock switch)."""
        return any(step.spec["action"] == "clock" for step in self.steps)

    def scaled(self, factor: float) -> Experiment:
        """Scale every time (load duration, fault starts and durations) by ``factor``."""
        steps = tuple(
            dataclasses.replace(s, start_s=s.start_s * factor, duration_s=s.duration_s * factor)
            for s in self.steps
        )
        return dataclasses.replace(
            self, steps=steps, load_duration_s=max(10.0, self.load_duration_s * factor)
        )


def _fail(path: Path, where: str, reason: str) -> ExperimentError:
    return ExperimentError(f"{path}: {where}: {reason}")


def _duration(path: Path, where: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _fail(path, where, str(exc)) from None


def load(path: Path) -> Experiment:
    """Parse and validate one experiment file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _fail(path, "file", str(exc)) from None
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise _fail(path, "top level", f"unknown keys {sorted(unknown)}")
    for table, allowed in TABLE_KEYS.items():
        # A top-level key written after a [table] header lands in that table in TOML.
        _refuse_unknown(path, table, data.get(table, {}), allowed)
    for key in ("title", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise _fail(path, key, "required text")
    load_table = data.get("load", {})
    load_duration = _duration(path, "load.duration", load_table.get("duration", "60s"))
    if load_duration <= 0:
        raise _fail(path, "load.duration", "must be more than 0 s")
    steps = tuple(_step(path, i, raw) for i, raw in enumerate(_array(path, data, "method")))
    if not steps and not data.get("negative_control"):
        raise _fail(path, "method", "at least one [[method]] fault is required")
    for index, step in enumerate(steps):
        end = step.start_s + step.duration_s
        if end >= load_duration:
            # Its recovery would run without load: nothing would judge it.
            raise _fail(
                path,
                f"method[{index}]",
                f"ends at {end:g} s, not before the load ends ({load_duration:g} s):"
                " a fault must heal while the load still runs",
            )
    _refuse_shared_switches(path, steps)
    profile = _text(path, "load.profile", load_table.get("profile", "steady"))
    if profile == "overload" and any(s.spec["action"] == "clock" for s in steps):
        # Its users stamp X-Request-Start from the generator's clock, which a skewed API does
        # not share (a real proxy shares the API host's): queue-time shedding would shed all.
        raise _fail(path, "load.profile", "overload stamps X-Request-Start: not with clock steps")
    guardrails = data.get("guardrails")
    return Experiment(
        name=path.stem,
        path=path,
        title=data["title"],
        description=data["description"].strip(),
        scenario=str(data.get("scenario", "")),
        tags=tuple(data.get("tags", ())),
        probes=tuple(
            _probe(path, i, raw)
            for i, raw in enumerate(_array(path, data.get("steady_state", {}), "probes"))
        ),
        steps=steps,
        load_profile=profile,
        load_users=_count(path, "load.users", load_table.get("users", 10), 1),
        load_duration_s=load_duration,
        guardrails=Path(os.path.normpath(path.parent / guardrails)) if guardrails else None,
        expected_dlq=_count(path, "expect.dlq", data.get("expect", {}).get("dlq", 0), 0),
        negative_control=dict(data.get("negative_control", {})),
    )


def _array(path: Path, table: dict[str, Any], key: str) -> list[Any]:
    """An array of tables (``[[method]]``), refusing a plain value written in its place."""
    value = table.get(key, [])
    if not isinstance(value, list):
        raise _fail(path, key, "must be an array of tables ([[...]])")
    return value


def _step(path: Path, index: int, raw: dict[str, Any]) -> Step:
    where = f"method[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a table")
    action = raw.get("action")
    if action not in ACTIONS:
        raise _fail(path, f"{where}.action", f"must be one of {', '.join(ACTIONS)}")
    # A misspelt key (durat1on) would otherwise read as its default: a fault of 0 s.
    _refuse_unknown(path, where, raw, STEP_KEYS | ACTION_KEYS[action])
    _check_values(path, where, action, raw)
    spec = {k: v for k, v in raw.items() if k not in ("start", "duration", "label", "phase")}
    start = _duration(path, f"{where}.start", raw.get("start", "0s"))
    lasting = action in LASTING or (action == "process" and raw["mode"] == "pause")
    if lasting and "duration" not in raw:
        raise _fail(path, f"{where}.duration", "required: how long the fault lasts")
    duration = _duration(path, f"{where}.duration", raw.get("duration", "0s"))
    if lasting and duration <= 0:
        raise _fail(path, f"{where}.duration", "must be more than 0 s (a fault that never held)")
    label = _text(path, f"{where}.label", raw["label"]) if "label" in raw else _describe(spec)
    phase = _phase(path, f"{where}.phase", raw["phase"]) if "phase" in raw else None
    return Step(spec, start, duration, label, phase)


def _phase(path: Path, where: str, value: Any) -> str:
    """A phase name rules can use (lower case), other than those every run writes."""
    text = _text(path, where, value)
    if not PHASE_NAME.match(text) or text in RUN_PHASES:
        raise _fail(
            path,
            where,
            f"{text!r}: a lower-case name (letters, digits, _ and -) other than"
            f" {', '.join(RUN_PHASES)}",
        )
    return text


def _switch(spec: dict[str, Any]) -> tuple[str, ...] | None:
    """What one heal turns back on for everyone: two faults on it cannot overlap."""
    action = spec["action"]
    if action == "down":
        return ("down", spec["link"])
    if action == "process":
        return ("process", spec["target"])
    if action in ("unbind", "alarm", "stall_commits"):
        return (action,)
    # Toxics and locks are named, and a clock heal resets only its own offset: each heal
    # undoes only its own, and a later clock step overrides an earlier one while both hold.
    return None


def _refuse_shared_switches(path: Path, steps: tuple[Step, ...]) -> None:
    """Refuse overlapping faults on one switch: the first heal would end both, unrecorded."""
    for later, step in enumerate(steps):
        for earlier, other in enumerate(steps[:later]):
            switch = _switch(step.spec)
            if switch is None or switch != _switch(other.spec):
                continue
            if (
                step.start_s <= other.start_s + other.duration_s
                and other.start_s <= step.start_s + step.duration_s
            ):
                raise _fail(
                    path,
                    f"method[{later}]",
                    f"overlaps method[{earlier}] on {' '.join(switch)}: the first to heal would"
                    " end both while the other still reads as on; stagger them",
                )


def _check_values(path: Path, where: str, action: str, raw: dict[str, Any]) -> None:
    """Refuse a missing or bad target here, not minutes into a run under load."""

    def one_of(key: str, choices) -> None:
        if raw.get(key) not in choices:
            found = "missing" if key not in raw else repr(raw[key])
            raise _fail(path, f"{where}.{key}", f"{found}; must be one of {', '.join(choices)}")

    if action in ("toxic", "down"):
        one_of("link", tuple(LINKS))
    if action == "toxic":
        one_of("type", TOXICS)
        if "stream" in raw:
            one_of("stream", ("upstream", "downstream"))
        toxicity = raw.get("toxicity", 1.0)
        if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
            raise _fail(path, f"{where}.toxicity", "must be a number from 0 to 1")
        if not 0 <= toxicity <= 1:
            raise _fail(path, f"{where}.toxicity", "must be a number from 0 to 1")
        attributes = raw.get("attributes", {})
        if not isinstance(attributes, dict):
            raise _fail(path, f"{where}.attributes", "must be a table")
        for key, value in attributes.items():
            _count(path, f"{where}.attributes.{key}", value, 0)
    elif action == "process":
        one_of("target", PROCESS_TARGETS)
        one_of("mode", PROCESS_MODES)
    elif action == "lock":
        one_of("table", LOCK_TABLES)
        _count(path, f"{where}.rows", raw.get("rows", 200), 1)
    elif action == "poison":
        _count(path, f"{where}.count", raw.get("count", 1), 1)
    elif action == "migrate":
        _count(path, f"{where}.runners", raw.get("runners", 2), 1)
    elif action == "clock":
        offset = raw.get("offset")
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            raise _fail(path, f"{where}.offset", f"seconds (a number) required, got {offset!r}")
        if not abs(offset) <= MAX_CLOCK_OFFSET_S:
            raise _fail(path, f"{where}.offset", f"within ±{MAX_CLOCK_OFFSET_S} s, got {offset}")
    for key in ("name", "label"):
        if key in raw:
            _text(path, f"{where}.{key}", raw[key])


def _count(path: Path, where: str, value: Any, least: int) -> int:
    """A whole number of at least ``least`` (never a bool, a float or a text)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _fail(path, where, f"must be a whole number of at least {least}, got {value!r}")
    return value


def _text(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, f"must be non-empty text, got {value!r}")
    return value


def _describe(spec: dict[str, Any]) -> str:
    action = spec["action"]
    if action == "toxic":
        return f"{spec.get('type')} on {spec.get('link')}"
    if action == "down":
        return f"{spec.get('link')} down"
    if action == "process":
        return f"{spec.get('mode')} {spec.get('target')}"
    if action == "clock":
        return f"clock {spec.get('offset'):+g} s"
    return action


def _probe(path: Path, index: int, raw: dict[str, Any]) -> Probe:
    where = f"steady_state.probes[{index}]"
    _refuse_unknown(path, where, raw, PROBE_KEYS)
    if raw.get("type") not in PROBES:
        raise _fail(path, f"{where}.type", f"must be one of {', '.join(PROBES)}")
    if "tolerance" not in raw:
        raise _fail(path, f"{where}.tolerance", "required")
    return Probe(
        str(raw.get("name", raw["type"])),
        raw["type"],
        raw["tolerance"],
        str(raw.get("path", "/readyz")),
    )


def catalogue() -> list[Experiment]:
    """Every experiment shipped in chaos/experiments; negative controls last (they corrupt)."""
    experiments = [load(p) for p in sorted(CATALOGUE.glob("*.toml"))]
    return sorted(experiments, key=lambda e: (bool(e.negative_control), e.name))


def find(name_or_path: str) -> Experiment:
    """Load an experiment by catalogue name or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return load(candidate)
    path = CATALOGUE / f"{name_or_path}.toml"
    if not path.exists():
        names = ", ".join(p.stem for p in sorted(CATALOGUE.glob("*.toml")))
        raise ExperimentError(f"no experiment {name_or_path!r}; the catalogue has: {names}")
    return load(path)
