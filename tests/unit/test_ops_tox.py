"""tox.ini and scripts/test agree: every environment is described, every tier has a folder,
and the tier runner turns pytest's "no tests" into a named failure."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIER = ROOT / "ops" / "ci" / "pytest-tier"
REQUIRED = {
    "lint", "type", "unit", "integration", "contract", "e2e", "chaos", "load-smoke", "bench",
    "audit", "py311", "py312", "py313",
}  # fmt: skip


@pytest.fixture(scope="module")
def tox_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return ini


def _section(ini: configparser.ConfigParser, env: str) -> configparser.SectionProxy:
    for name in ini.sections():
        if name == f"testenv:{env}":
            return ini[name]
        factors = re.fullmatch(r"testenv:py3\{([\d,]+)\}", name)
        if factors and env in {f"py3{f}" for f in factors.group(1).split(",")}:
            return ini[name]
    raise KeyError(env)


def test_every_environment_is_listed_and_described(tox_ini):
    envs = tox_ini["tox"]["env_list"].split()
    assert set(envs) >= REQUIRED
    assert tox_ini["tox"]["skip_missing_interpreters"] == "true"
    for env in envs:
        assert _section(tox_ini, env).get("description", "").strip(), env


def test_pytest_tiers_pass_posargs_and_have_their_folder(tox_ini):
    for env in tox_ini["tox"]["env_list"].split():
        commands = _section(tox_ini, env)["commands"]
        assert "{posargs" in commands, env
        for folder in re.findall(r"\b(tests/[\w/]+)", commands):
            assert (ROOT / folder).is_dir(), f"{env}: {folder} does not exist"


def test_scripts_test_runs_the_same_tiers_as_tox(tox_ini):
    text = (ROOT / "scripts" / "test").read_text()
    pairs = dict(re.findall(r"([\w-]+):(tests/\w+)", text))
    for env, folder in pairs.items():
        assert folder in _section(tox_ini, env)["commands"], env
    assert set(pairs) | {"lint", "type"} >= REQUIRED - {"audit", "py311", "py312", "py313"}
    assert "envs=(lint type)" in text


def _fake_python(tmp_path: Path, code: int) -> dict[str, str]:
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho pytest "$@"\nexit {code}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PYTHON": str(fake), "TOX_ENV_NAME": "demo"}


def _tier(tmp_path: Path, code: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TIER), "tests/nothing"],
        env=_fake_python(tmp_path, code),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_tier_runner_names_an_empty_tier_as_a_failure(tmp_path):
    done = _tier(tmp_path, 5)
    assert done.returncode == 5
    assert "demo: pytest collected no tests from: tests/nothing" in done.stderr
    assert "an empty tier is a failure" in done.stderr


def test_tier_runner_passes_results_through_with_a_junit_file(tmp_path):
    done = _tier(tmp_path, 0)
    assert done.returncode == 0 and done.stderr == ""
    assert "--junitxml=" in done.stdout and "runs/junit/demo.xml" in done.stdout
    assert _tier(tmp_path, 1).returncode == 1


def test_scripts_test_fails_when_a_tier_folder_has_no_tests(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test", tmp_path / "scripts" / "test")
    stubs = {"scripts/bootstrap": "exit 0", ".venv/bin/tox": "echo tox ran >> tox.log"}
    stubs[".venv/bin/python"] = "cat >/dev/null"  # the closing summary reads its script
    for name, body in stubs.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_x.py").write_text("")
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "test")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "tests/integration has no tests" in done.stderr
    assert not (tmp_path / "tox.log").exists()
