"""`smoke`: post-deploy checks against the local stack or any deployment."""

from __future__ import annotations

import dataclasses
import json
import os

import click

from harness.smoke import Check, Smoke, Unreachable
from harness.stack import Stack, default_state_dir


def _local_api_url() -> str | None:
    return Stack(default_state_dir()).app_url("api")


@click.command("smoke")
@click.option("--url", default=None, help="base URL of the API (default: the local stack)")
@click.option("--api-key", default=None, help="API key (default: $RECO_SMOKE_API_KEY or dev-key)")
@click.option(
    "--timeout",
    "timeout_s",
    default=60.0,
    show_default=True,
    help="seconds to wait for written events to be applied",
)
@click.option("--slo-ms", default=500.0, show_default=True, help="recommendation latency SLO")
@click.option("--write", is_flag=True, help="also write tagged test events (user ids smoke-*)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document for pipelines")
def command(
    url: str | None,
    api_key: str | None,
    timeout_s: float,
    slo_ms: float,
    write: bool,
    as_json: bool,
) -> int:
    """Check health, readiness, contract version, metrics, and (with --write) the pipeline."""
    url = url or _local_api_url()
    if not url:
        click.echo("error: no --url given and no local stack running (`reco-harness up`)", err=True)
        return 2
    if not url.startswith(("http://", "https://")):
        click.echo(f"error: --url must start with http:// or https://, got {url!r}", err=True)
        return 2
    key = api_key or os.environ.get("RECO_SMOKE_API_KEY") or "dev-key"

    def show(check: Check) -> None:
        if not as_json:
            mark = "PASS" if check.passed else "FAIL"
            click.echo(f"{mark}  {check.name:<28} {check.duration_ms:>8.1f} ms  {check.detail}")

    smoke = Smoke(url, key, timeout_s, slo_ms, report=show)
    try:
        smoke.read_checks()
        if write:
            smoke.write_checks()
    except Unreachable as exc:
        if as_json:
            click.echo(json.dumps({"url": url, "passed": False, "error": str(exc)}))
        else:
            click.echo(f"error: {exc}", err=True)
        return 2
    failed = [c for c in smoke.checks if not c.passed]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "url": url,
                    "passed": smoke.passed,
                    "checks": [dataclasses.asdict(c) for c in smoke.checks],
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{len(smoke.checks) - len(failed)} passed, {len(failed)} failed")
    return 0 if smoke.passed else 1
