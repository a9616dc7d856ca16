"""A newcomer's first commands on a fresh home, as the README gives them.

``make airflow ARGS='dags test ingest_transactions 2026-01-05'`` prepares the home it finds empty
(metadata DB migrated, ``airflow_settings.yaml`` applied, Feast definitions deployed) and lands the
day; the next command finds it prepared and prepares nothing. ``make up`` serves the MLflow UI beside
Airflow (where the task pages' "MLflow run" buttons lead) and ``make down`` stops both.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-01-05"
README_COMMAND = f"make airflow ARGS='dags test ingest_transactions {DAY}'"


@pytest.fixture(scope="module")
def fresh_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a new user: an empty MLOPS_HOME, free ports, no project setting of ours."""
    home = tmp_path_factory.mktemp("fresh") / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_")) or k.startswith("MLOPS_TEST_")
    }
    env.update(
        {
            "MLOPS_HOME": str(home),
            "MLOPS_AIRFLOW_PORT": str(free_port()),
            "MLOPS_MLFLOW_UI_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    return env


def _run(command: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-6000:]}"


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_the_readmes_debug_command_lands_the_day_on_a_fresh_home(fresh_home: dict[str, str]) -> None:
    assert README_COMMAND in (ROOT / "README.md").read_text(), "the test runs what the README says"
    simulate = [
        sys.executable,
        "-m",
        "include.devtools",
        "simulate",
        "--start",
        DAY,
        "--rows-per-day",
        "2000",
    ]
    assert _run(simulate, fresh_home).returncode == 0

    done = _run(shlex.split(README_COMMAND), fresh_home)
    assert done.returncode == 0, _tail(done)
    prepared = [line for line in done.stderr.splitlines() if line.startswith("Prepared the Airflow home")]
    assert len(prepared) == 1, _tail(done)
    assert "database migrated" in prepared[0] and "Feast definitions deployed" in prepared[0]
    landed = Path(fresh_home["MLOPS_HOME"]) / "lake" / "transactions" / f"dt={DAY}" / "part-00000.parquet"
    assert landed.is_file(), _tail(done)
    assert pq.read_metadata(landed).num_rows > 1000

    # The home is now prepared: the next command starts at once, preparing nothing.
    again = _run(["make", "airflow", "ARGS=dags list -o plain"], fresh_home)
    assert again.returncode == 0, _tail(again)
    assert "ingest_transactions" in again.stdout
    assert "Prepared" not in again.stderr, _tail(again)


def test_up_serves_the_mlflow_ui_beside_airflow_and_down_stops_both(fresh_home: dict[str, str]) -> None:
    ui_url = fresh_home["MLOPS_MLFLOW_UI_URL"]
    status = [sys.executable, "-m", "include.devtools", "airflow", "status"]
    up = _run(["make", "up"], fresh_home, timeout=300)
    try:
        assert up.returncode == 0, _tail(up)
        assert f"MLflow:   {ui_url}\n" in up.stdout, _tail(up)
        shown = _run(status, fresh_home)
        assert shown.returncode == 0
        components = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
        assert set(components) == {"api-server", "scheduler", "dag-processor", "triggerer", "mlflow-ui"}
        assert components["mlflow-ui"].endswith(f"({ui_url})")
        with urllib.request.urlopen(f"{ui_url}/health", timeout=10) as resp:
            assert resp.status == 200
        # The UI reads the home's tracking store (the experiments the pipeline logs to).
        search = urllib.request.Request(
            f"{ui_url}/ajax-api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(search, timeout=10) as resp:
            experiments = json.loads(resp.read())["experiments"]
        assert "Default" in {e["name"] for e in experiments}
        assert (Path(fresh_home["MLOPS_HOME"]) / "mlflow" / "mlflow.db").is_file()
    finally:
        down = _run(["make", "down"], fresh_home, timeout=180)
    assert down.returncode == 0, _tail(down)
    assert "mlflow-ui" in down.stdout
    after = _run(status, fresh_home)
    assert after.returncode == 1 and "not running" in after.stdout
    assert not _listening(ui_url), "the MLflow UI still answers after `make down`"
