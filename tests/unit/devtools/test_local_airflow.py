"""How the local Airflow launcher tells whether a component still runs."""

from __future__ import annotations

import subprocess
import sys
import time

from include.devtools import local_airflow


def test_an_exited_child_is_not_alive_even_before_it_is_reaped() -> None:
    # The demo, the benchmarks and the tests start the components themselves: a component that
    # exited stays a zombie of that process until reaped, and `down` must not wait for it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while local_airflow._alive(child.pid):
        assert time.monotonic() < deadline, "an exited child still counts as alive"
        time.sleep(0.05)
    child.returncode = 0  # reaped by _alive; keep Popen from waiting on a pid it no longer owns


def test_a_running_process_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert local_airflow._alive(child.pid)
    finally:
        child.kill()
        child.wait()
