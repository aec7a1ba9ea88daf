"""`reco-harness report RUN_DIR`: one self-contained HTML file for a load or chaos run."""

from __future__ import annotations

from pathlib import Path

import click

EXIT_OK, EXIT_USAGE = 0, 2


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write the HTML (default: RUN_DIR/report.html, or RUN_DIR/reco-report.html"
    " where report.html is another tool's, as in load runs: Locust writes one)",
)
def command(run_dir: Path, out: Path | None) -> int:
    """Write an offline HTML report of RUN_DIR: verdict, charts, audit, tables, metadata."""
    from harness.report import ReportError, read, save

    try:
        data = read(run_dir)
        path = save(data, out)
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USAGE
    except OSError as exc:
        click.echo(f"error: cannot write the report: {exc}", err=True)
        return EXIT_USAGE
    if data.missing:
        click.echo(f"note: not in {run_dir}: {', '.join(data.missing)} (left out of the report)")
    for problem in data.problems:
        click.echo(f"warning: {problem}", err=True)
    click.echo(f"report: {path}")
    return EXIT_OK
