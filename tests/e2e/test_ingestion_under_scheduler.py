"""Ingestion under a real scheduler: the sensor defers while the drop is incomplete, then lands it."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pytest

from include.devtools.simulator import SimulationConfig, transactions_for_day, write_drop
from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS
from tests.e2e.conftest import POKE_SECONDS

pytestmark = pytest.mark.e2e


def _states(stack, dag_id: str, key: str) -> dict[str, str | None]:
    runs = [r for r in stack.client.dag_runs(dag_id) if r.get("partition_key") == key]
    if not runs:
        return {}
    run = runs[-1]
    tis = stack.client.task_instances(dag_id, run["dag_run_id"])
    return {"run": run["state"], **{t["task_id"]: t["state"] for t in tis}}


def test_sensor_defers_until_the_marker_lands_then_the_day_is_ingested(airflow_stack):
    stack = airflow_stack
    # Unpausing a producer with catchup off schedules its latest partition: yesterday (UTC).
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    key = day.isoformat()
    landing = stack.home / "landing"
    stack.client.unpause("ingest_transactions")

    states = stack.wait_until(
        lambda: (s := _states(stack, "ingest_transactions", key)).get("wait_for_drop") == "deferred" and s,
        120,
        f"the {key} sensor to defer",
    )
    assert states["run"] == "running"
    assert states.get("validate_and_land") in (None, "scheduled", "none")

    # Data first, then the marker: a drop without `_SUCCESS` is incomplete and must not be read.
    table = transactions_for_day(day, SimulationConfig(seed=3, rows_per_day=3000))
    staged = Path(write_drop(str(stack.home / "staging"), "transactions", day, table))
    drop = landing / "transactions" / f"dt={key}"
    drop.mkdir(parents=True)
    shutil.copy(staged / "part-00000.parquet", drop / "part-00000.parquet")
    time.sleep(3 * POKE_SECONDS)
    assert _states(stack, "ingest_transactions", key).get("wait_for_drop") == "deferred"
    shutil.copy(staged / "_SUCCESS", drop / "_SUCCESS")

    final = stack.wait_until(
        lambda: (s := _states(stack, "ingest_transactions", key)).get("run") in ("success", "failed") and s,
        240,
        f"the {key} run to finish",
    )
    assert final["run"] == "success", f"{final}\n{stack.log_tail()}"
    base = lake.location(str(stack.home / "lake" / "transactions" / f"dt={key}"))
    files = lake.list_files(base)
    assert [f.path.rsplit("/", 1)[-1] for f in files] == ["part-00000.parquet"]
    import pyarrow.parquet as pq

    landed = pq.read_table(files[0].path)
    assert landed.num_rows == table.num_rows
    assert landed.schema.names == TRANSACTIONS.names


def test_the_landed_day_links_its_data_docs_in_one_click(airflow_stack):
    """The validate task's "GX Data Docs" extra link opens the day's Data Docs from the API server."""
    import urllib.request

    stack = airflow_stack
    key = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    runs = [r for r in stack.client.dag_runs("ingest_transactions") if r.get("partition_key") == key]
    assert runs and runs[-1]["state"] == "success", "run the sensor test first (same module)"
    run_id = urllib.request.quote(runs[-1]["dag_run_id"], safe="")
    answer = stack.client.get(
        f"/api/v2/dags/ingest_transactions/dagRuns/{run_id}/taskInstances/validate_and_land/links"
    )
    link = answer["extra_links"]["GX Data Docs"]
    assert link and link.startswith("/mlops/reports/validation/transactions/"), answer
    assert answer["extra_links"]["MLflow run"] is None
    # Reports answer signed-in users only (the UI's cookie or an API token).
    request = urllib.request.Request(
        stack.base_url + link, headers={"Authorization": f"Bearer {stack.client.token()}"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        page = resp.read().decode()
    assert resp.status == 200 and "<html" in page.lower()
    assert key in page or "transactions" in page
