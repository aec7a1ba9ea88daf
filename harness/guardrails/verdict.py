"""The outcome of evaluating a rule set: every check, every breach, and the exit code."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET  # noqa: S405 - used to write, never to parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

EXIT_OK, EXIT_BREACH, EXIT_USAGE, EXIT_INVARIANT = 0, 1, 2, 3
# Characters XML 1.0 forbids even escaped: ElementTree writes them as they are.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Result:
    """One expression checked against one scope target in one phase."""

    rule: str
    metric: str
    source: str
    scope: str
    endpoint: str | None
    phase: str
    expr: str
    expected: str
    observed: float | None
    status: str  # "pass" | "breach" | "skipped"
    invariant: bool = False
    unit: str = ""
    reason: str = ""
    line: int | None = None
    window: tuple[float, float] | None = None
    file: str | None = None  # the rule's file when inherited through ``extends``

    @property
    def target(self) -> str:
        return self.endpoint or self.scope

    @property
    def duration_s(self) -> float:
        """Seconds of the run the check judged: its phase window."""
        # Untimed sources (audit, contract, benchmark) judge a whole file, not a window of the
        # run: they have no duration of their own, so 0.
        return self.window[1] - self.window[0] if self.window else 0.0

    def observed_text(self) -> str:
        if self.observed is None:
            return "no data"
        return f"{self.observed:.4g}{(' ' + self.unit) if self.unit else ''}"

    def message(self) -> str:
        """``p(99) = 412 ms, expected < 200 ms``, or why it was skipped."""
        if self.status == "skipped" or (self.observed is None and self.reason):
            return self.reason
        return f"{self.metric} = {self.observed_text()}, expected {self.expected}"


@dataclass
class Verdict:
    """All results of one evaluation; breaches are every failed check, not only the first."""

    results: list[Result] = field(default_factory=list)
    guardrails: str = ""
    profile: str | None = None
    aborted: str | None = None
    # Why the run cannot be judged (no rule applies, the audit could not run…): never a pass.
    errors: list[str] = field(default_factory=list)
    interrupted: str | None = None  # the signal that cut the run short: a pass is not one

    @property
    def breaches(self) -> list[Result]:
        return [r for r in self.results if r.status == "breach"]

    @property
    def skipped(self) -> list[Result]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 guardrail breach, 2 no verdict (errors, a partial run), 3 invariant breach."""
        breaches = self.breaches
        # Lost data is what an audit found, never the audit a run that did not finish could
        # not write (a required rule without data): such a run has no verdict, not a loss.
        unjudged = bool(self._unjudged())
        if any(r.invariant and (r.observed is not None or not unjudged) for r in breaches):
            return EXIT_INVARIANT
        if self.errors:
            return EXIT_USAGE
        if breaches:
            return EXIT_BREACH  # what ran breached: so would the whole run
        return EXIT_USAGE if self.interrupted else EXIT_OK

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict:
        def row(r: Result) -> dict:
            return {**asdict(r), "target": r.target, "message": r.message()}

        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "guardrails": self.guardrails,
            "profile": self.profile,
            "aborted": self.aborted,
            "errors": list(self.errors),
            "interrupted": self.interrupted,
            "counts": {
                "checks": len(self.results),
                "passed": sum(r.status == "pass" for r in self.results),
                "breaches": len(self.breaches),
                "skipped": len(self.skipped),
            },
            "breaches": [row(r) for r in self.breaches],
            "results": [row(r) for r in self.results],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_junit(self) -> str:
        """JUnit XML: one test case per check; breaches are failures, skips are skipped."""
        suite = ET.Element(
            "testsuite",
            name="guardrails",
            tests=str(len(self.results) + len(self._unjudged())),
            failures=str(len(self.breaches)),
            errors=str(len(self._unjudged())),
            skipped=str(len(self.skipped)),
            time=_seconds(_covered(r.window for r in self.results if r.window)),
        )
        for n, message in enumerate(self._unjudged(), 1):  # only junit.xml must not look green
            # Unique names: CI tools key test cases by class and name and merge duplicates.
            name = "verdict" if n == 1 else f"verdict ({n})"
            # Why the run has no verdict: a fact about the run, which judged no time of it.
            case = ET.SubElement(
                suite, "testcase", classname="guardrails.run", name=name, time=_seconds(0.0)
            )
            ET.SubElement(case, "error", message=message, type="harness").text = message
        for r in self.results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"guardrails.{r.source}.{r.phase.replace(' ', '_')}",
                name=f"{r.rule} [{r.target}] {r.expr}",
                time=_seconds(r.duration_s),
            )
            if r.status == "breach":
                kind = "invariant" if r.invariant else "guardrail"
                failure = ET.SubElement(case, "failure", message=r.message(), type=kind)
                failure.text = f"{r.rule}: {r.message()} (scope {r.target}, phase {r.phase})"
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=r.reason)
        for element in suite.iter():  # error texts quote exceptions and logs (ANSI colours)
            element.attrib.update({k: xml_text(v) for k, v in element.attrib.items()})
            element.text = xml_text(element.text) if element.text else element.text
        ET.indent(suite)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"

    def _unjudged(self) -> list[str]:
        """Why the run has no verdict: its errors, and the signal that cut it short."""
        partial = [f"interrupted by {self.interrupted}: a partial run is never a pass"]
        return self.errors + (partial if self.interrupted else [])

    def table(self) -> str:
        """A readable table, breaches first, with a one-line summary at the end."""
        order = {"breach": 0, "skipped": 2, "pass": 1}
        rows = sorted(self.results, key=lambda r: order[r.status])
        head = ("STATUS", "RULE", "SOURCE", "SCOPE", "PHASE", "CHECK", "OBSERVED")
        body = [
            (
                ("INVARIANT" if r.invariant else "BREACH")
                if r.status == "breach"
                else r.status.upper(),
                _clip(r.rule, 40),
                r.source,
                _clip(r.target, 36),
                r.phase,
                r.expr,
                r.observed_text() if r.status != "skipped" else _clip(r.reason, 60),
            )
            for r in rows
        ]
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
                 for x in [head, *body]]  # fmt: skip
        counts = self.to_dict()["counts"]
        verdict = {0: "PASS", 1: "BREACH", 2: "ERROR", 3: "INVARIANT VIOLATED"}[self.exit_code]
        lines.append(
            f"{verdict}: {counts['breaches']} breach(es), {counts['passed']} passed, "
            f"{counts['skipped']} skipped (exit {self.exit_code})"
        )
        if self.aborted:
            lines.append(f"run aborted early: {self.aborted}")
        lines.extend(f"no verdict: {message}" for message in self._unjudged())
        return "\n".join(lines)


def _covered(windows: Iterable[tuple[float, float]]) -> float:
    """Seconds the union of the windows covers: phases overlap (``all`` holds ``fault``)."""
    total, reached = 0.0, -math.inf
    for start, end in sorted(windows):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def _seconds(value: float) -> str:
    """A JUnit ``time`` attribute: seconds, as JUnit readers expect."""
    return f"{value:.3f}"


def xml_text(text: str) -> str:
    """Text a strict XML parser accepts: forbidden characters shown as ``\\xNN`` escapes."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
