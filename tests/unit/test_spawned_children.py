"""Children spawn() started are stopped through their Popen, so none is left 'still running'."""

from __future__ import annotations

import sys
import warnings

from harness.stack import procs


def test_a_stopped_child_is_known_to_its_popen_and_released(tmp_path):
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "c.log")
    assert proc in procs._CHILDREN
    assert procs.stop_pid(proc.pid, timeout=10)
    # Reaped with os.waitpid alone, Popen would keep returncode None and warn when collected.
    assert proc.returncode is not None
    assert proc not in procs._CHILDREN
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        proc.__del__()


def test_a_child_still_running_stays_held(tmp_path):
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "c.log")
    try:
        procs._reap(proc.pid)
        assert proc in procs._CHILDREN and proc.returncode is None
    finally:
        procs.stop_pid(proc.pid, timeout=10)
    assert proc not in procs._CHILDREN
