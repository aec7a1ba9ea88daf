"""Flag SQL operations that lock or rewrite tables in use, or destroy data."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from migrations.files import Migration, split_statements

ALLOW_RE = re.compile(r"--\s*lint:\s*allow\s+([a-z0-9_,\- ]+)")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One dangerous operation at a file and line."""

    filename: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.rule}: {self.message}"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().upper()


def _created_tables(statements: Iterable[str]) -> set[str]:
    names = set()
    for text in statements:
        match = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?([\w.\"]+)", _norm(text))
        if match:
            names.add(match.group(1).strip('"').lower())
    return names


def _rules(text: str, new_tables: set[str]) -> list[tuple[str, str]]:
    """Return (rule, message) pairs for one normalised statement."""
    sql = _norm(text)
    hits: list[tuple[str, str]] = []
    index = re.match(r"CREATE (?:UNIQUE )?INDEX (CONCURRENTLY )?.*? ON (?:ONLY )?([\w.\"]+)", sql)
    if index and not index.group(1) and index.group(2).strip('"').lower() not in new_tables:
        hits.append(
            (
                "index-not-concurrent",
                "CREATE INDEX on an existing table without CONCURRENTLY "
                "blocks writes; use CONCURRENTLY in a '-- migrate: no-transaction' file",
            )
        )
    if re.match(r"DROP (TABLE|COLUMN|INDEX|SCHEMA|TYPE|VIEW|MATERIALIZED VIEW)\b", sql) or (
        sql.startswith("ALTER TABLE") and " DROP COLUMN " in f" {sql} "
    ):
        hits.append(("drop", "DROP destroys data or breaks running code; expand/contract instead"))
    table = re.match(r"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?([\w.\"]+)", sql)
    existing = table is not None and table.group(1).strip('"').lower() not in new_tables
    if existing and re.search(r"ADD (?:COLUMN )?(?:IF NOT EXISTS )?[\w\"]+ [^,]*NOT NULL", sql):
        clause = re.search(r"ADD (?:COLUMN )?.*", sql)
        if clause and " DEFAULT " not in f" {clause.group(0)} ":
            hits.append(
                (
                    "add-column-not-null",
                    "ADD COLUMN ... NOT NULL without DEFAULT fails on "
                    "existing rows and blocks writers",
                )
            )
    if existing and re.search(r"ALTER (?:COLUMN )?[\w\"]+ (?:SET DATA )?TYPE ", sql):
        hits.append(
            (
                "alter-column-type",
                "changing a column type rewrites the table under an ACCESS EXCLUSIVE lock",
            )
        )
    if (
        existing
        and re.search(r"ADD CONSTRAINT .* (FOREIGN KEY|CHECK)", sql)
        and ("NOT VALID" not in sql)
    ):
        hits.append(
            (
                "constraint-not-valid",
                "add FOREIGN KEY/CHECK constraints NOT VALID, "
                "then VALIDATE CONSTRAINT in a later step",
            )
        )
    if re.search(r"\bRENAME (?:COLUMN |TO )", sql):
        hits.append(("rename", "renaming breaks code still running against the old name"))
    return hits


def lint_migration(migration: Migration) -> list[Finding]:
    """Lint one migration; tables it creates itself count as new, all others as in use."""
    statements = split_statements(migration.sql)
    new_tables = _created_tables(s.text for s in statements)
    lines = migration.sql.splitlines()
    findings = []
    for statement in statements:
        allowed = _allowed_rules(lines, statement.line)
        for rule, message in _rules(statement.text, new_tables):
            if rule not in allowed:
                findings.append(Finding(migration.filename, statement.line, rule, message))
    return findings


def _allowed_rules(lines: list[str], line: int) -> set[str]:
    """Rules waived by a `-- lint: allow RULE` comment on the statement's line or the one above."""
    allowed: set[str] = set()
    for number in (line - 1, line):
        if 1 <= number <= len(lines):
            match = ALLOW_RE.search(lines[number - 1])
            if match:
                allowed |= {r.strip() for r in re.split(r"[ ,]+", match.group(1)) if r.strip()}
    return allowed


def lint_all(migrations: list[Migration], only: set[str] | None = None) -> list[Finding]:
    """Lint migrations (or only the named ones); only tables created in the same file are new."""
    findings: list[Finding] = []
    for migration in migrations:
        if only is None or migration.filename in only:
            findings.extend(lint_migration(migration))
    return findings
