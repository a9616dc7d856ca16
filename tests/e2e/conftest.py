"""A real local Airflow (API server, scheduler, DAG processor, triggerer) for the end-to-end tier.

Started once per session with its own MLOPS_HOME and ports, through the same module `make up`
uses (which also deploys the Feast definitions and serves the MLflow UI), and stopped (process
groups) at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.devtools.airflow_api import AirflowClient
from tests.conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
POKE_SECONDS = 3
MLFLOW_URIS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    client: AirflowClient
    base_url: str

    def wait_until(self, predicate: Callable[[], object], timeout: float, what: str, every: float = 2.0):
        """Poll until ``predicate()`` is truthy; fail with ``what`` and the last value otherwise."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}")

    def log_tail(self, component: str = "scheduler", chars: int = 4000) -> str:
        path = self.home / "airflow" / "logs" / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory, request) -> Iterator[AirflowStack]:
    """A fresh local Airflow per test module; a module may add env with ``AIRFLOW_STACK_ENV``."""
    home = tmp_path_factory.mktemp("e2e") / "home"
    port = free_port()
    # The stack's MLflow store follows its MLOPS_HOME: URIs left in this process's environment
    # (``mlflow.set_tracking_uri`` and ``set_registry_uri`` put them there) must not point it at
    # another test's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in MLFLOW_URIS}
    env.update({"MLOPS_HOME": str(home), "MLOPS_AIRFLOW_PORT": str(port), "PYTHONPATH": str(ROOT)})
    # `up` also serves the MLflow UI (where the task pages' "MLflow run" buttons lead): on a port of its own.
    env["MLOPS_MLFLOW_UI_URL"] = f"http://127.0.0.1:{free_port()}"
    env["MLOPS_SENSOR_POKE_SECONDS"] = str(POKE_SECONDS)
    env.update(getattr(request.module, "AIRFLOW_STACK_ENV", {}))
    cmd = [sys.executable, "-m", "include.devtools", "airflow"]
    up = subprocess.run([*cmd, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    try:
        assert up.returncode == 0, f"local Airflow did not start:\n{up.stdout}\n{up.stderr}"
        password = __import__("json").loads((home / "airflow" / "passwords.json").read_text())["admin"]
        base_url = f"http://127.0.0.1:{port}"
        stack = AirflowStack(home, env, AirflowClient(base_url, "admin", password), base_url)
        stack.wait_until(
            lambda: {p.stem for p in (ROOT / "dags").glob("*.py")} <= set(stack.client.dag_ids()),
            120,
            "every DAG to be parsed",
        )
        yield stack
    finally:
        subprocess.run([*cmd, "down"], env=env, cwd=ROOT, timeout=120)
