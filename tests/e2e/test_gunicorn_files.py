"""A gunicorn server leaves no log or metric files behind in the temporary directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from harness.pytest_plugins.gunicorn import ROOT, GunicornServer
from harness.stack import free_port, wait_until


def test_a_server_without_a_workdir_removes_its_files_on_stop(database_url):
    server = GunicornServer({"RECO_ENV": "test", "RECO_DATABASE_URL": database_url}, workers=1)
    try:
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert server.log_path.exists() and os.path.isdir(server.prom_dir)
    finally:
        server.stop()
    assert server.owned_dir is not None and not server.owned_dir.exists()


@pytest.mark.parametrize("control_socket", [False, True])
def test_the_config_removes_its_metrics_dir_and_binds_no_shared_socket(
    database_url, tmp_path, control_socket
):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.pop("XDG_RUNTIME_DIR", None)
    env |= {
        "TMPDIR": str(tmp_path),  # where the config's own metrics directory goes
        "HOME": str(tmp_path),  # where gunicorn's control socket would go by default
        "RECO_ENV": "test",
        "RECO_DATABASE_URL": database_url,
        "RECO_GUNICORN_WORKERS": "1",
    }
    socket_path = tmp_path / "ctl" / "gunicorn.ctl"
    if control_socket:
        env["RECO_GUNICORN_CONTROL_SOCKET"] = str(socket_path)
    argv = [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn.conf.py"]
    argv += ["--bind", f"127.0.0.1:{port}", "service.wsgi:app"]
    with open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, 30, "gunicorn")
        assert len(list(tmp_path.glob("reco-prom-*"))) == 1
        # No control socket at gunicorn's per-user default path, one only where asked for.
        assert not (tmp_path / ".gunicorn").exists()
        if control_socket:
            wait_until(socket_path.is_socket, 10, "the control socket")
        else:
            assert not socket_path.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert list(tmp_path.glob("reco-prom-*")) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECO_LOG_LEVEL", "bogus"),
        ("RECO_EVENT_MAX_FUTURE_S", "nan"),
        ("RECO_GUNICORN_WORKERS", "0"),
        ("RECO_GUNICORN_WORKERS", "abc"),
    ],
)
def test_a_refused_setting_stops_the_master_with_one_line_and_exit_2(tmp_path, variable, value):
    # A worker refusing it printed a traceback and gunicorn exited 3 ("Worker failed to boot").
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECO_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {"TMPDIR": str(tmp_path), variable: value}
    config = str(ROOT / "service/gunicorn.conf.py")
    done = subprocess.run(  # noqa: S603 - our interpreter running gunicorn
        [sys.executable, "-m", "gunicorn", "-c", config, "--bind", f"127.0.0.1:{free_port()}"]
        + ["service.wsgi:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"configuration error: {variable}: ")
    assert list(tmp_path.iterdir()) == []  # refused before the metrics directory is made
