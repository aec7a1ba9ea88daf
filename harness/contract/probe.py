"""Run Schemathesis on one operation of an in-process app and collect every failure it reports.

Unlike a parametrized test, which stops at the first failing example, this keeps generating so
a test can assert which checks a (deliberately broken) app variant trips.
"""

from __future__ import annotations

from typing import Any


def operation(schema: Any, label: str) -> Any:
    """The APIOperation for a label such as 'GET /v1/events/{event_id}'."""
    method, path = label.split(" ", 1)
    return schema[path][method]


def generate_only(max_examples: int) -> Any:
    """Hypothesis settings for a probe: the same generated cases every run, nothing stored."""
    import hypothesis

    return hypothesis.settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )


def collect_failures(schema: Any, label: str, app: Any, max_examples: int = 20) -> list[Any]:
    """Positive and negative cases for ``label`` against ``app``; return the failures seen."""
    import hypothesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    op = operation(schema, label)
    strategy = st.one_of([op.as_strategy(mode) for mode in GenerationMode])
    failures: list[Any] = []

    @generate_only(max_examples)
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        try:
            case.call_and_validate(app=app)
        except FailureGroup as group:
            failures.extend(group.exceptions)

    run()
    return failures


def failed_checks(failures: list[Any]) -> set[str]:
    """The names of the checks behind a list of failures."""
    return {name for failure in failures for name in getattr(failure, "checks", ())}
