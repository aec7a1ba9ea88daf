"""Read and validate the guardrail file (TOML); every error names the file, line and reason."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.guardrails.expr import (
    SERVER_METRICS,
    SERVER_ONLY_METRICS,
    Expr,
    ExprError,
    parse_expr,
)

TIMED_SOURCES = frozenset({"locust", "server"})
BUILTIN_SOURCES = TIMED_SOURCES | {"benchmark", "contract", "audit"}
RULE_KEYS = frozenset(
    {"name", "source", "scope", "phase", "expr", "profiles", "abort_on_fail", "invariant",
     "required", "description", "replaces"}
)  # fmt: skip
SETTINGS_KEYS = frozenset(
    {"tolerated_fail_ratio", "warmup", "abort_on_fail", "delay_abort_eval", "source"}
)
SLO_KEYS = frozenset({"p99_ms", "error_ratio", "throughput_ratio"})
TOP_KEYS = frozenset({"extends", "settings", "slo", "rule"})
MAX_EXTENDS = 8  # files in one chain of ``extends``
_RELATIVE_PHASE = re.compile(r"^(first|last)\s+(\S+)$")
_NAMED_PHASE = re.compile(r"^[a-z][a-z0-9_\- ]*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


class GuardrailError(ValueError):
    """The guardrail file cannot be used; carries the file, line and reason."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return float(value)
    text = str(value).strip().lower()
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"expected a duration like '30s', '5m' or '1h30m', got {value!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


@dataclass(frozen=True)
class Phase:
    """A time window: a named phase, or the first/last N seconds of the run."""

    text: str
    kind: str  # "named" | "first" | "last"
    seconds: float = 0.0


def parse_phase(text: Any) -> Phase:
    """Parse ``run``, ``all``, ``baseline``, ``fault``, ``recovery``, ``last 30s``, ``first 1m``."""
    if not isinstance(text, str):
        raise ValueError(f"phase must be a string, got {text!r}")
    cleaned = " ".join(text.strip().lower().split())
    match = _RELATIVE_PHASE.match(cleaned)
    if match:
        seconds = parse_duration(match[2])
        if seconds <= 0:
            raise ValueError(f"phase {text!r} needs a positive duration")
        return Phase(cleaned, match[1], seconds)
    if not _NAMED_PHASE.match(cleaned):
        raise ValueError(
            f"unknown phase {text!r}: use run, all, baseline, fault, recovery, a shape phase, "
            "'first N s' or 'last N s'"
        )
    return Phase(cleaned, "named")


@dataclass(frozen=True)
class Rule:
    """One guardrail: expressions over a source, in a scope, during a phase."""

    name: str
    source: str
    scope: str  # "global" | "each" | an endpoint name
    phase: Phase
    exprs: tuple[Expr, ...]
    line: int | None = None
    profiles: tuple[str, ...] = ()
    abort_on_fail: bool = False
    invariant: bool = False
    required: bool = False
    description: str = ""
    file: str | None = None  # where the rule is written, when inherited through ``extends``

    @property
    def timed(self) -> bool:
        return self.source in TIMED_SOURCES

    def applies_to(self, profile: str | None) -> bool:
        return not self.profiles or profile is None or profile in self.profiles


@dataclass(frozen=True)
class Settings:
    """File-wide settings."""

    tolerated_fail_ratio: float | None = None
    warmup_s: float = 0.0
    abort_on_fail: bool = False
    delay_abort_eval_s: float = 10.0
    source: str = "locust"


@dataclass(frozen=True)
class Slo:
    """The service-level objective the stress profile ramps against to find the knee."""

    p99_ms: float = 300.0
    error_ratio: float = 0.001
    throughput_ratio: float = 0.9


@dataclass
class RuleSet:
    """Every rule of one guardrail file (and of the files it extends), plus its settings."""

    path: str
    rules: list[Rule] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    slo: Slo = field(default_factory=Slo)
    extends: tuple[str, ...] = ()  # the inherited files, nearest first

    def for_profile(self, profile: str | None) -> list[Rule]:
        return [r for r in self.rules if r.applies_to(profile)]


class _Locator:
    """Find the line of a table, key or value in the TOML text (tomllib reports none)."""

    _HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\-]+)\s*\]")

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def _block(self, table: str, index: int | None) -> tuple[int, int]:
        seen, start = -1, None
        for i, line in enumerate(self.lines):
            match = self._HEADER.match(line)
            if not match:
                continue
            if start is not None:
                return start, i
            if match[2] == table:
                seen += 1
                if index is None or seen == index:
                    start = i
        return (start, len(self.lines)) if start is not None else (0, len(self.lines))

    def line(self, table: str, index: int | None = None, key: str | None = None,
             needle: str | None = None) -> int:  # fmt: skip
        """1-based line of ``needle`` in ``key`` of ``[table]`` (``[[table]]`` #index)."""
        start, end = self._block(table, index)
        found = start
        if key is not None:
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for i in range(start, end):
                if pattern.match(self.lines[i]):
                    found = i
                    break
        if needle is not None:
            # Prefer the exact string literal; a bare substring may hit a longer sibling.
            for candidates in ((f'"{needle}"', f"'{needle}'"), (needle,)):
                for i in range(found, end):
                    if any(c in self.lines[i] for c in candidates):
                        return i + 1
        return found + 1


def load_rules(path: str | Path) -> RuleSet:
    """Read a guardrail file; raise GuardrailError with file, line and reason when malformed."""
    return parse_rules(_read(Path(path)), path)


def parse_rules(text: str, path: str | Path = "<guardrails>") -> RuleSet:
    """Parse guardrail TOML text (``path`` names it in messages and anchors ``extends``)."""
    builders = _chain(text, path, ())
    for builder in builders:
        builder.check_top_keys()
    return _merge(builders)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GuardrailError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GuardrailError(path, None, f"not UTF-8 text: {exc.reason}") from None


def _toml(text: str, path: str | Path) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = int(match[1]) if match else None
        reason = _TOML_POSITION.sub("", message) if match else message
        raise GuardrailError(path, line, f"invalid TOML: {reason}") from None


def _chain(text: str, path: str | Path, seen: tuple[Path, ...]) -> list[_Builder]:
    """The file and every file it extends, as builders, the furthest base first."""
    builder = _Builder(_toml(text, path), _Locator(text), path)
    if "extends" not in builder.data:
        return [builder]
    line = builder._top_key_line("extends")
    target = builder.data["extends"]
    if not isinstance(target, str) or not target.strip():
        raise builder.fail(line, f"extends must be the path of a guardrail file, got {target!r}")
    base = Path(os.path.normpath(Path(path).parent / target))  # relative to the extending file
    here = (Path(path).resolve(),) if Path(path).is_file() else ()
    chain, resolved = seen + here, base.resolve()
    if resolved in chain:
        names = " -> ".join(p.name for p in (*chain, resolved))
        raise builder.fail(line, f"extends {target!r} makes a cycle: {names}")
    if len(chain) >= MAX_EXTENDS:
        raise builder.fail(line, f"extends: more than {MAX_EXTENDS} files in one chain")
    try:
        base_text = _read(base)
    except GuardrailError as exc:
        raise builder.fail(line, f"extends {target!r}: {exc.reason}") from None
    return [*_chain(base_text, base, chain), builder]


def _merge(builders: list[_Builder]) -> RuleSet:
    """Settings and slo merge key by key; a rule replaces an inherited one it names, or adds."""
    own = builders[-1]
    merged_settings: dict = {}
    merged_slo: dict = {}
    setter = own
    for builder in builders:
        raw_settings, raw_slo = builder._table("settings"), builder._table("slo")
        builder._settings(raw_settings)  # errors name the file that holds the key
        builder._slo(raw_slo)
        merged_settings.update(raw_settings)
        merged_slo.update(raw_slo)
        if "tolerated_fail_ratio" in raw_settings:
            setter = builder
    settings, slo = own._settings(merged_settings), own._slo(merged_slo)
    rules: list[Rule] = []
    for builder in builders:
        inherited = {rule.name: index for index, rule in enumerate(rules)}
        file = None if builder is own else str(builder.path)
        replaced: set[str] = set()
        for index, raw in enumerate(builder.raw_rules()):
            rule = dataclasses.replace(builder._rule(index, raw, settings), file=file)
            target = raw.get("replaces")
            if rule.name in inherited and rule.name != target:
                raise builder.fail(
                    rule.line or 1,
                    f"rule {rule.name!r} is inherited through extends: add "
                    f"replaces = {rule.name!r} to change it, or give this rule another name",
                )
            if target is None:
                rules.append(rule)
                continue
            where = builder.loc.line("rule", index, "replaces")
            if builder is builders[0]:
                raise builder.fail(
                    where, "rule replaces: only a file with 'extends' inherits rules"
                )
            if target not in inherited or target in replaced:
                why = "is replaced twice" if target in replaced else "names no inherited rule"
                raise builder.fail(where, f"rule replaces {target!r}: {why}")
            if "name" not in raw:
                rule = dataclasses.replace(rule, name=target)  # the same check, changed
            replaced.add(target)
            rules[inherited[target]] = rule
    if settings.tolerated_fail_ratio is not None:
        rules.insert(
            0,
            Rule(
                name="tolerated failure ratio",
                source="locust",
                scope="global",
                phase=parse_phase("run"),
                exprs=(parse_expr(f"fail_ratio <= {settings.tolerated_fail_ratio!r}"),),
                line=setter.loc.line("settings", None, "tolerated_fail_ratio"),
                file=None if setter is own else str(setter.path),
            ),
        )
    bases = tuple(str(b.path) for b in reversed(builders[:-1]))
    return RuleSet(str(own.path), rules, settings, slo, bases)


class _Builder:
    def __init__(self, data: dict, locator: _Locator, path: str | Path):
        self.data, self.loc, self.path = data, locator, path

    def fail(self, line: int, reason: str) -> GuardrailError:
        return GuardrailError(self.path, line, reason)

    def check_top_keys(self) -> None:
        for key in self.data:
            if key not in TOP_KEYS:
                line = self.loc.line(key) if isinstance(self.data[key], dict) else 1
                if not isinstance(self.data[key], dict | list):
                    line = self._top_key_line(key)
                raise self.fail(
                    line, f"unknown key {key!r} (expected extends, settings, slo or rule)"
                )

    def raw_rules(self) -> list:
        raw_rules = self.data.get("rule", [])
        if not isinstance(raw_rules, list):
            raise self.fail(self._top_key_line("rule"), "'rule' must be an array: use [[rule]]")
        return raw_rules

    def _top_key_line(self, key: str) -> int:
        for i, line in enumerate(self.loc.lines):
            if re.match(rf"^\s*{re.escape(key)}\s*=", line):
                return i + 1
        return 1

    def _table(self, name: str) -> dict:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(self._top_key_line(name), f"'{name}' must be a table: use [{name}]")
        return value

    def _unknown(self, table: str, raw: dict, allowed: frozenset, index: int | None = None):
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    self.loc.line(table, index, key),
                    f"unknown key {key!r} in [{table}] (allowed: {', '.join(sorted(allowed))})",
                )

    def _settings(self, raw: dict) -> Settings:
        self._unknown("settings", raw, SETTINGS_KEYS)
        kw: dict[str, Any] = {}
        try:
            if "tolerated_fail_ratio" in raw:
                key = "tolerated_fail_ratio"
                kw[key] = _ratio(raw[key])
            if "warmup" in raw:
                key = "warmup"
                kw["warmup_s"] = parse_duration(raw[key])
            if "delay_abort_eval" in raw:
                key = "delay_abort_eval"
                kw["delay_abort_eval_s"] = parse_duration(raw[key])
            if "abort_on_fail" in raw:
                key = "abort_on_fail"
                kw[key] = _bool(raw[key])
            if "source" in raw:
                key = "source"
                kw[key] = _source(raw[key])
        except ValueError as exc:
            raise self.fail(
                self.loc.line("settings", None, key), f"settings.{key}: {exc}"
            ) from None
        return Settings(**kw)

    def _slo(self, raw: dict) -> Slo:
        self._unknown("slo", raw, SLO_KEYS)
        kw: dict[str, float] = {}
        for key, value in raw.items():
            try:
                kw[key] = _positive(value) if key == "p99_ms" else _ratio(value)
            except ValueError as exc:
                raise self.fail(self.loc.line("slo", None, key), f"slo.{key}: {exc}") from None
        return Slo(**kw)

    def _rule(self, index: int, raw: Any, settings: Settings) -> Rule:
        header = self.loc.line("rule", index)
        if not isinstance(raw, dict):
            raise self.fail(header, "each rule must be a table ([[rule]])")
        self._unknown("rule", raw, RULE_KEYS, index)

        def where(key: str, needle: str | None = None) -> int:
            return self.loc.line("rule", index, key, needle)

        key = "source"
        try:
            source = _source(raw.get("source", settings.source))
            key = "scope"
            scope = _text(raw.get("scope", "global"), "scope")
            key = "phase"
            phase = parse_phase(raw.get("phase", "run"))
            if source not in TIMED_SOURCES and phase.text != "run":
                raise ValueError(f"source {source!r} has no time axis; only phase 'run' applies")
            key = "profiles"
            profiles = _strings(raw.get("profiles", []), "profiles")
            key = "abort_on_fail"
            abort = _bool(raw.get("abort_on_fail", settings.abort_on_fail))
            if abort and source not in TIMED_SOURCES:
                raise ValueError(
                    f"abort_on_fail needs a live source (locust or server), not {source!r}"
                )
            key = "invariant"
            invariant = _bool(raw.get("invariant", source == "audit"))
            key = "required"
            required = _bool(raw.get("required", False))
            key = "name"
            name = _text(raw.get("name", ""), "name", allow_empty=True)
            key = "description"
            description = _text(raw.get("description", ""), "description", allow_empty=True)
            key = "replaces"
            _text(raw.get("replaces", "-"), "replaces")
        except ValueError as exc:
            raise self.fail(where(key) if key in raw else header, f"rule {key}: {exc}") from None
        if "expr" not in raw:
            raise self.fail(header, "rule needs 'expr' (a string or a list of strings)")
        texts = raw["expr"] if isinstance(raw["expr"], list) else [raw["expr"]]
        if not texts:
            raise self.fail(where("expr"), "rule expr: the list is empty")
        exprs = []
        for text in texts:
            try:
                expr = parse_expr(text, timed=source in TIMED_SOURCES)
                if source == "server" and expr.metric not in SERVER_METRICS:
                    raise ExprError(
                        f"{expr.label!r} is not available from server histograms "
                        f"(use one of: p(N), {', '.join(sorted(SERVER_METRICS - {'p'}))})"
                    )
                if source != "server" and expr.metric in SERVER_ONLY_METRICS:
                    raise ExprError(f'{expr.label!r} needs source = "server"')
                exprs.append(expr)
            except ExprError as exc:
                needle = text if isinstance(text, str) else None
                raise self.fail(where("expr", needle), f"rule expr: {exc}") from None
        if not name:
            name = f"{source} {scope} {phase.text}: {', '.join(e.text for e in exprs)}"
        return Rule(
            name, source, scope, phase, tuple(exprs), header, profiles, abort, invariant,
            required, description,
        )  # fmt: skip


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    return float(value)


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return float(value)


def _text(value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of names, got {value!r}")
    return tuple(value)


def _source(value: Any) -> str:
    text = _text(value, "source")
    if not re.match(r"^[a-z][a-z0-9_\-]*$", text):
        raise ValueError(
            f"unknown source {text!r}: use {', '.join(sorted(BUILTIN_SOURCES))} "
            "or the name of a JSON file of values in the results directory"
        )
    return text
