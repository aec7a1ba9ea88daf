"""The migration lint flags each dangerous operation it claims to, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrations.files import discover, split_statements
from migrations.lint import lint_all

CASES = {
    "index-not-concurrent": "CREATE INDEX items_title_idx ON items (title);",
    "drop": "DROP TABLE items;",
    "add-column-not-null": "ALTER TABLE items ADD COLUMN sku text NOT NULL;",
    "alter-column-type": "ALTER TABLE items ALTER COLUMN title TYPE varchar(10);",
    "constraint-not-valid": (
        "ALTER TABLE items ADD CONSTRAINT fk_cat FOREIGN KEY (category_id) "
        "REFERENCES categories (category_id);"
    ),
    "rename": "ALTER TABLE items RENAME COLUMN title TO name;",
}


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "0001_base.sql").write_text("CREATE TABLE items (id int);\n")
    (tmp_path / "0002_change.sql").write_text("-- a change\n\n" + body + "\n")
    return tmp_path


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_is_flagged_with_file_and_line(tmp_path, rule):
    migrations, problems = discover(_write(tmp_path, CASES[rule]))
    assert not problems
    findings = [f for f in lint_all(migrations) if f.filename == "0002_change.sql"]
    assert [(f.rule, f.line) for f in findings] == [(rule, 3)]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY items_title_idx ON items (title);",
        "ALTER TABLE items ADD COLUMN sku text NOT NULL DEFAULT '';",
        "ALTER TABLE items ADD COLUMN note text;",
        "ALTER TABLE items ADD CONSTRAINT c CHECK (id > 0) NOT VALID;",
        "-- lint: allow drop\nDROP TABLE items;",
        "CREATE TABLE t (id int); CREATE INDEX t_idx ON t (id);",
    ],
)
def test_safe_operations_pass(tmp_path, sql):
    migrations, _ = discover(_write(tmp_path, sql))
    assert [f for f in lint_all(migrations) if f.filename == "0002_change.sql"] == []


def test_shipped_migrations_are_clean():
    migrations, problems = discover()
    assert problems == []
    assert lint_all(migrations) == []


def test_bad_names_and_gaps_are_reported(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    _, problems = discover(tmp_path)
    assert any("2_bad.sql: bad name" in p for p in problems)
    assert any("0003_c.sql: out of order" in p for p in problems)


def test_split_keeps_dollar_quotes_and_line_numbers():
    sql = "SELECT 1;\n-- c;\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
    statements = split_statements(sql)
    assert [s.line for s in statements] == [1, 3]
    assert "SELECT 1; $$" in statements[1].text


def test_a_missing_folder_or_bad_configuration_is_exit_2_with_one_line(monkeypatch, capsys):
    from migrations.__main__ import main

    url = "postgresql://reco@127.0.0.1:1/reco"
    assert main(["status", "--dir", "/nonexistent-migrations", "--database-url", url]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    monkeypatch.setenv("RECO_ENV", "bogus")
    assert main(["status"]) == 2  # it raised SystemExit with a string: exit 1
    assert capsys.readouterr().err.startswith("config error: RECO_ENV")
