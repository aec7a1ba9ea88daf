"""What this machine has and lacks for the stack, with the exact command to fix each gap."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable

from harness.stack.postgres import pg_bindir
from harness.stack.procs import user_exists
from harness.stack.rabbitmq import rabbitmq_server_path

APT = "apt-get install -y"


@dataclasses.dataclass(frozen=True)
class Check:
    """One requirement: whether it holds, what was found, and how to fix it."""

    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True


def _python_packages() -> Check:
    modules = ["flask", "gunicorn", "psycopg2", "pika", "prometheus_flask_exporter", "orjson"]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return Check(
        "python packages",
        not missing,
        "all present" if not missing else f"missing {missing}",
        fix=f"{sys.executable} -m pip install -e '.[test,dev]'",
    )


def run_checks(
    which: Callable[[str], str | None] = shutil.which,
    pg_bin: Callable[[], object] = pg_bindir,
    rabbit_bin: Callable[[], object] = rabbitmq_server_path,
    has_user: Callable[[str], bool] = user_exists,
    environ: dict[str, str] | None = None,
) -> list[Check]:
    """Inspect the machine; every probe is injectable so tests can simulate a bare machine."""
    environ = dict(os.environ if environ is None else environ)
    checks = [
        Check(
            "python >= 3.11",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            fix="install Python 3.11 or newer",
        ),
        _python_packages(),
    ]
    if environ.get("RECO_DATABASE_URL"):
        checks.append(Check("postgresql", True, "external (RECO_DATABASE_URL)"))
    else:
        bindir = pg_bin()
        checks.append(
            Check(
                "postgresql server",
                bindir is not None,
                str(bindir or "not found"),
                fix=f"{APT} postgresql",
            )
        )
        checks.append(
            Check(
                "user postgres",
                has_user("postgres"),
                "exists" if has_user("postgres") else "missing",
                fix=f"{APT} postgresql",
            )
        )
    if environ.get("RECO_AMQP_URL"):
        checks.append(Check("rabbitmq", True, "external (RECO_AMQP_URL)"))
    else:
        script = rabbit_bin()
        checks.append(
            Check(
                "rabbitmq-server",
                script is not None,
                str(script or "not found"),
                fix=f"{APT} rabbitmq-server",
            )
        )
    if os.geteuid() == 0:
        checks.append(
            Check(
                "runuser",
                which("runuser") is not None,
                which("runuser") or "not found",
                fix=f"{APT} util-linux",
            )
        )
    toxiproxy = environ.get("TOXIPROXY_URL") or which("toxiproxy-server")
    checks.append(
        Check(
            "toxiproxy",
            True,
            f"real server: {toxiproxy}"
            if toxiproxy
            else "built-in chaos.faultproxy (no Go binary)",
            required=False,
        )
    )
    for tool, package in (
        ("wrk", "wrk"),
        ("pgbench", "postgresql-contrib"),
        ("promtool", "prometheus"),
        ("chromium", "chromium chromium-driver"),
    ):
        path = which(tool)
        checks.append(
            Check(
                tool, path is not None, path or "not found", fix=f"{APT} {package}", required=False
            )
        )
    return checks


def render(checks: list[Check]) -> str:
    """Format checks as aligned lines with the fix for each gap."""
    lines = []
    for check in checks:
        mark = "ok " if check.ok else ("MISSING" if check.required else "optional")
        line = f"{mark:<8} {check.name:<20} {check.found}"
        if not check.ok and check.fix:
            line += f"\n         fix: {check.fix}"
        lines.append(line)
    return "\n".join(lines)
