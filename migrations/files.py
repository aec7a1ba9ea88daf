"""Discover numbered migration files and split them into statements with line numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

SQL_DIR = Path(__file__).with_name("sql")
NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
NO_TRANSACTION_MARK = "-- migrate: no-transaction"


@dataclasses.dataclass(frozen=True)
class Migration:
    """One forward-only SQL file."""

    version: int
    filename: str
    path: Path
    sha256: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def transactional(self) -> bool:
        return NO_TRANSACTION_MARK not in self.sql


@dataclasses.dataclass(frozen=True)
class Statement:
    """One SQL statement and the line it starts on."""

    text: str
    line: int


def discover(directory: Path = SQL_DIR) -> tuple[list[Migration], list[str]]:
    """Return the migrations in version order and the naming/order problems found."""
    problems: list[str] = []
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = NAME_RE.match(path.name)
        if not match:
            problems.append(f"{path.name}: bad name, expected NNNN_snake_case.sql")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Migration(int(match.group(1)), path.name, path, digest))
    seen: dict[int, str] = {}
    for index, migration in enumerate(found, start=1):
        if migration.version in seen:
            problems.append(
                f"{migration.filename}: duplicate version {migration.version:04d} "
                f"(also {seen[migration.version]})"
            )
        elif migration.version != index:
            problems.append(f"{migration.filename}: out of order, expected version {index:04d}")
        seen.setdefault(migration.version, migration.filename)
    return found, problems


def split_statements(sql: str) -> list[Statement]:
    """Split SQL on top-level semicolons, skipping comments, quotes and dollar quotes."""
    statements: list[Statement] = []
    buf: list[str] = []
    line = 1
    start_line: int | None = None
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            chunk = sql[i : n if end == -1 else end + 2]
            line += chunk.count("\n")
            i += len(chunk)
            continue
        if ch in "'\"":
            end = i + 1
            while end < n and sql[end] != ch:
                end += 1
            chunk = sql[i : end + 1]
        elif ch == "$" and (tag := re.match(r"\$[A-Za-z_]*\$", sql[i:])):
            close = sql.find(tag.group(0), i + len(tag.group(0)))
            chunk = sql[i : n if close == -1 else close + len(tag.group(0))]
        elif ch == ";":
            text = "".join(buf).strip()
            if text:
                statements.append(Statement(text, start_line or line))
            buf, start_line = [], None
            i += 1
            continue
        else:
            chunk = ch
        if start_line is None and not chunk.isspace():
            start_line = line
        buf.append(chunk)
        line += chunk.count("\n")
        i += len(chunk)
    text = "".join(buf).strip()
    if text:
        statements.append(Statement(text, start_line or line))
    return statements
