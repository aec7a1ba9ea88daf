"""The import rules of docs/ARCHITECTURE.md, checked by scanning every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
FIRST_PARTY = {"service", "workers", "harness", "chaos", "migrations", "loadtests", "tests"}

# package -> first-party modules it may import (prefix match)
ALLOWED = {
    "service": ("service", "migrations"),
    "workers": (
        "workers",
        "service.settings",
        "service.db",
        "service.events",
        "service.logs",
        "service.wallclock",
    ),
    "migrations": ("migrations", "service.settings"),
    "loadtests": ("loadtests", "harness.guardrails", "harness.ports"),
    "chaos": (
        "chaos",
        "harness",
        "service.settings",
        "service.events",
        "service.db",
        "service.wallclock",
        "workers",
        "migrations",
    ),
    "harness": FIRST_PARTY - {"tests"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from harness import guardrails` imports harness.guardrails, not all of harness.
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return [n for n in names if n.split(".")[0] in FIRST_PARTY]


def test_every_package_respects_its_import_rules():
    violations = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_production_never_imports_the_harness():
    for package in ("service", "workers", "migrations"):
        for path in (ROOT / package).rglob("*.py"):
            assert not [n for n in _imports(path) if n.startswith(("harness", "chaos", "tests"))]
