"""Command line: python -m migrations up|check|status|lint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg2

from migrations.files import SQL_DIR, discover
from migrations.lint import lint_all
from migrations.runner import MigrationError, applied, check, up


def _dsn(arg: str | None) -> str:
    if arg:
        return arg
    from service.settings import ConfigError, Settings

    try:
        return Settings.from_env().database_url
    except ConfigError as exc:
        raise UsageError(f"config error: {exc}") from None


class UsageError(RuntimeError):
    """The command cannot run as asked: configuration, a missing folder (exit 2)."""


def main(argv: list[str] | None = None) -> int:
    """Run a migrations subcommand; exit 0 ok, 1 problems found, 2 usage or connection error."""
    parser = argparse.ArgumentParser(prog="python -m migrations")
    parser.add_argument("command", choices=["up", "check", "status", "lint"])
    parser.add_argument("--database-url", help="libpq URL (default: RECO_DATABASE_URL)")
    parser.add_argument("--dir", type=Path, default=SQL_DIR, help="folder of NNNN_*.sql files")
    args = parser.parse_args(argv)
    try:
        if args.command == "lint":
            migrations, problems = discover(args.dir)
            lines = problems + [str(f) for f in lint_all(migrations)]
            print("\n".join(lines) or "no findings")
            return 1 if lines else 0
        dsn = _dsn(args.database_url)
        if args.command == "up":
            names = up(dsn, args.dir)
            print(f"{len(names)} applied" if names else "already at head")
            return 0
        if args.command == "status":
            return _status(dsn, args.dir)
        report = check(dsn, args.dir)
        for problem in report.problems:
            print(f"problem: {problem}")
        for name in report.pending:
            print(f"pending: {name}")
        print("ok" if report.ok else "check failed")
        return 0 if report.ok else 1
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        print(f"database error: {str(exc).strip()}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. --dir that does not exist
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _status(dsn: str, directory: Path) -> int:
    """One line per migration, the files' and those only the database knows (it is ahead)."""
    migrations, _ = discover(directory)
    recorded = applied(dsn)
    known = {m.version for m in migrations}
    for migration in migrations:
        row = recorded.get(migration.version)
        state = f"applied {row[2]:%Y-%m-%d %H:%M:%S}" if row else "pending"
        if row and row[1] != migration.sha256:
            state += " (changed since: checksum drift)"
        print(f"{migration.filename:40} {state}")
    for version in sorted(set(recorded) - known):
        filename, _sha, at = recorded[version]
        print(f"{filename:40} applied {at:%Y-%m-%d %H:%M:%S} (no file here: the database is ahead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
