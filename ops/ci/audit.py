"""Audit the exact installed dependency set with pip-audit; say plainly when nothing was audited.

The pinned set is `pip freeze` of the running interpreter's environment (the .venv every tier
runs in), written to runs/audit/pinned.txt next to pip-audit's JSON report. Exit codes: 0 no
known vulnerability (or the advisory service was unreachable and RECO_AUDIT_REQUIRED is not
set), 1 vulnerabilities found, 2 the audit could not run and RECO_AUDIT_REQUIRED=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "runs" / "audit"
# Markers of a network failure in pip-audit's traceback (it has no dedicated exit code).
UNREACHABLE = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "Timeout")


def freeze(target: Path) -> int:
    """Write the installed distributions (editable project excluded) as name==version lines."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    lines = [line for line in listed.splitlines() if "==" in line and not line.startswith("#")]
    target.write_text("\n".join(lines) + "\n")
    return len(lines)


def unavailable(reason: str) -> int:
    """Report that nothing was audited; fail only where an audit is required."""
    sys.stdout.flush()
    print(f"audit: NOT AUDITED - {reason}", file=sys.stderr)
    if os.environ.get("RECO_AUDIT_REQUIRED") == "1":
        print("audit: RECO_AUDIT_REQUIRED=1, so this is a failure", file=sys.stderr)
        return 2
    print("audit: set RECO_AUDIT_REQUIRED=1 to make this a failure (CI does)", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    """Freeze, run pip-audit on the frozen set, and explain its outcome."""
    tool = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which(
        "pip-audit"
    )
    if tool is None:
        return unavailable("pip-audit is not installed (it is in the dev extra)")
    OUT.mkdir(parents=True, exist_ok=True)
    pinned = OUT / "pinned.txt"
    report = OUT / "pip-audit.json"
    count = freeze(pinned)
    service = os.environ.get("RECO_AUDIT_SERVICE", "pypi")
    print(f"audit: {count} pinned packages ({pinned.relative_to(ROOT)}), service {service}")
    cmd = [
        tool, "-r", str(pinned), "--no-deps", "--disable-pip", "--progress-spinner", "off",
        "--vulnerability-service", service, "--format", "json", "--output", str(report),
        "--timeout", "20", *argv,
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # noqa: S603 - pip-audit with fixed arguments
    except subprocess.TimeoutExpired:
        return unavailable(f"pip-audit did not finish within 900 s against {service}")
    if done.returncode != 0 and any(marker in done.stderr for marker in UNREACHABLE):
        return unavailable(f"the {service} advisory service is unreachable from this machine")
    if not report.exists():
        sys.stderr.write(done.stderr)
        return unavailable(f"pip-audit exited {done.returncode} without a report")
    deps = json.loads(report.read_text()).get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(
        f"audit: {len(deps) - len(skipped)} audited, {len(vulnerable)} vulnerable, "
        f"{len(skipped)} not audited; report {report.relative_to(ROOT)}"
    )
    if vulnerable:
        return 1
    if deps and len(skipped) == len(deps):
        # A mirror without advisory data answers "not found" for every package: that is no audit.
        return unavailable(f"the {service} service returned no advisory data for any package")
    for dep in skipped:
        print(f"audit: not audited: {dep['name']} {dep['version']}: {dep['skip_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
