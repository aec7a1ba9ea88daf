"""`contract`: Schemathesis (`st run`) against the live service, with reports and an allow-list."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import click

from harness.contract.allowlist import AllowlistError, load
from harness.contract.config import API_KEY_ENV, PEER_API_KEY_ENV, budget
from harness.contract.paths import ALLOWLIST_PATH
from harness.contract.runner import (
    EXIT_ERROR,
    ContractRun,
    execute,
    own_stack_keys,
    service_url,
)
from service.settings import DEV_API_KEY

RATE_LIMIT = re.compile(r"[1-9][0-9]*/[smhd]|auto")


def _rate_limit(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # Checked here: Schemathesis would refuse it only after the stack had started.
    if value is not None and not RATE_LIMIT.fullmatch(value):
        raise click.BadParameter("expected N/UNIT with UNIT s, m, h or d (10/s), or auto")
    return value


@click.command("contract")
@click.option("--url", default=None, help="base URL of a running service (default: start a stack)")
@click.option(
    "--max-examples",
    type=click.IntRange(min=1),
    default=None,
    help="test cases per operation (default: $RECO_CONTRACT_MAX_EXAMPLES or the CI budget)",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="seeded random generation (default: $RECO_CONTRACT_SEED, else deterministic)",
)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="report directory")
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    default=DEV_API_KEY,
    show_default=True,
    help=f"X-API-Key for authenticated operations (${API_KEY_ENV})",
)
@click.option(
    "--peer-api-key",
    envvar=PEER_API_KEY_ENV,
    default=None,
    help="another API client's key: object_level_authorization replays reads of the first "
    f"client's objects with it and expects them refused (${PEER_API_KEY_ENV}; default: none, "
    "and that check is listed as not run)",
)
@click.option(
    "--allowlist",
    "allowlist_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"allow-list file (default: {ALLOWLIST_PATH.name} at the repository root)",
)
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/UNIT|auto",
    callback=_rate_limit,
    help="pace requests below the service's rate limit, e.g. 10/s or 300/m, or 'auto' to wait "
    "as each 429's Retry-After says (st run --rate-limit)",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=10),
    default=600.0,
    show_default=True,
    help="wall-clock limit for Schemathesis, seconds",
)
def command(
    url: str | None,
    max_examples: int | None,
    seed: int | None,
    out: str | None,
    api_key: str,
    peer_api_key: str | None,
    allowlist_path: str | None,
    rate_limit: str | None,
    timeout_s: float,
) -> int:
    """Run every Schemathesis check; exit 0 pass, 1 contract failures, 2 harness error."""
    path = Path(allowlist_path) if allowlist_path else ALLOWLIST_PATH
    peer_api_key = peer_api_key or None  # an empty one, as from an unset CI secret: none
    if peer_api_key == api_key:
        # One client twice: every read of its own objects would be reported as a bypass.
        click.echo("error: --peer-api-key must be another API client's key", err=True)
        return EXIT_ERROR
    try:
        allowlist = load(path)
        default_examples, default_seed = budget()
    except (AllowlistError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_ERROR
    click.echo(f"allow-list {path}:")
    for line in allowlist.report() or ["(empty)"]:
        click.echo(f"  {line}")
    for entry in allowlist.expired:
        click.echo(f"warning: allow-list entry {entry.id} expired on {entry.expires}", err=True)
    out_dir = Path(out or f"runs/contract-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    api_keys = None
    if url is None and peer_api_key is None:
        # The stack started here is ours: give its API a second client, so that
        # object_level_authorization judges without anyone having to make one up.
        own = own_stack_keys(api_key, os.environ)
        if own is not None:
            api_keys, peer_api_key = own
    try:
        with service_url(url, log=click.echo, api_keys=api_keys) as base_url:
            click.echo(f"contract: testing {base_url}, reports in {out_dir}")
            code, summary = execute(
                ContractRun(
                    url=base_url,
                    out_dir=out_dir,
                    max_examples=max_examples or default_examples,
                    seed=default_seed if seed is None else seed,
                    api_key=api_key,
                    peer_api_key=peer_api_key,
                    allowlist=allowlist,
                    allowlist_path=path.resolve(),
                    rate_limit=rate_limit,
                    timeout_s=timeout_s,
                ),
                echo=click.echo,
            )
    except Exception as exc:  # noqa: BLE001 - stack start-up can fail in many ways; all are exit 2
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_ERROR
    verdict = "PASS" if summary.get("passed") else "FAIL"
    click.echo(
        f"contract {verdict}: {summary.get('operations', 0)} operations, "
        f"{summary.get('checks', 0)} checks, {summary.get('failures', 0)} failures, "
        f"{summary.get('allowlisted', 0)} allow-listed -> {out_dir / 'contract.json'}"
    )
    if summary.get("error"):
        click.echo(f"error: {summary['error']}", err=True)
    return code
