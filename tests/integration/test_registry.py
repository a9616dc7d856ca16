"""The model's lock (:func:`include.mlops.registry.model_lock`): a file lock on the embedded profile,
a PostgreSQL advisory lock when ``MLOPS_LOCK_DATABASE_URL`` is set, and a refusal on the cluster
profile without it. Exclusion is checked against a lock held by another process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from include.mlops import registry
from include.mlops.core.settings import PROJECT_ROOT, load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

_HOLD_LOCK = """
import time
from include.mlops import registry
with registry.model_lock(timeout=5) as held:
    print(held, flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def lock_held_elsewhere(env: dict[str, str]) -> Iterator[str]:
    """The model's lock held by another process (with the settings of ``env``) for the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK],
        cwd=PROJECT_ROOT,
        env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        assert line, "the lock holder did not start"
        yield line
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=30)


def test_file_lock_excludes_another_process(mlops_home: Path) -> None:
    env = dict(os.environ)
    s = load_settings(env)
    with lock_held_elsewhere(env) as held:
        assert held.startswith("file lock")
        with (
            pytest.raises(registry.LockTimeout, match="held for more than"),
            registry.model_lock(0.5, s),
        ):
            pass
    with registry.model_lock(5, s) as held:  # released when its holder died
        assert held.startswith("file lock")


def test_advisory_lock_excludes_another_process(mlops_home: Path, postgres_url: str) -> None:
    env = {
        **os.environ,
        "MLOPS_LOCK_DATABASE_URL": postgres_url,
        "MLOPS_MODEL_NAME": f"lock_test_{uuid.uuid4().hex[:8]}",
    }
    s = load_settings(env)
    with lock_held_elsewhere(env) as held:
        assert held.startswith("postgresql advisory lock")
        with pytest.raises(registry.LockTimeout, match="was held for more than"), registry.model_lock(0.5, s):
            pass
    with registry.model_lock(5, s) as held:  # released when its holder's session ended
        assert held.startswith("postgresql advisory lock")


def test_cluster_profile_refuses_a_file_lock(mlops_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_LOCK_DATABASE_URL"}
    s = load_settings({**env, "MLOPS_PROFILE": "cluster"})
    with pytest.raises(registry.LockUnavailable, match="MLOPS_LOCK_DATABASE_URL"), registry.model_lock(5, s):
        pass
    assert not (mlops_home / "locks").exists()  # refused before any file lock was taken
