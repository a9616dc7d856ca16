"""Operations under a real Airflow: the metrics endpoint behind Airflow's login, a late drop alerted by
the scheduler's deadline and the triggerer while the sensor keeps waiting, then the same drop
quarantined, alerted and counted in the textfiles refreshed by the listener.

The drop deadline is shortened to 36 s (``MLOPS_ALERT_DROP_DEADLINE_HOURS=0.01``) so that it passes
while the test waits.
"""

from __future__ import annotations

import datetime as dt
import http.client
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from include.devtools.simulator import write_drop
from tests.e2e.ops_checks import assert_story_alerts, read_alerts
from tests.integration.bad_drops import good_table, with_values

if TYPE_CHECKING:
    from tests.e2e.conftest import AirflowStack

pytestmark = pytest.mark.e2e

AIRFLOW_STACK_ENV = {"MLOPS_ALERT_DROP_DEADLINE_HOURS": "0.01"}


def fetch(stack: AirflowStack, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    url = urlsplit(stack.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def test_the_metrics_endpoint_answers_airflow_users_only(airflow_stack: AirflowStack) -> None:
    status, body = fetch(airflow_stack, "/mlops-metrics/metrics")
    assert status in (401, 403) and "mlops_" not in body
    status, _ = fetch(airflow_stack, "/mlops-metrics/metrics", {"Authorization": "Bearer not-a-token"})
    assert status in (401, 403)
    status, body = fetch(
        airflow_stack, "/mlops-metrics/metrics", {"Authorization": f"Bearer {airflow_stack.client.token()}"}
    )
    assert status == 200, body
    assert "mlops_lake_facts_up 1.0" in body and "mlops_registry_facts_up 1.0" in body
    assert "# TYPE mlops_drift_share gauge" in body


def _states(stack: AirflowStack, key: str) -> dict[str, str | None]:
    runs = [r for r in stack.client.dag_runs("ingest_transactions") if r.get("partition_key") == key]
    if not runs:
        return {}
    tis = stack.client.task_instances("ingest_transactions", runs[-1]["dag_run_id"])
    return {"run": runs[-1]["state"], **{t["task_id"]: t["state"] for t in tis}}


def test_a_late_drop_alerts_while_the_sensor_waits_then_its_quarantine_alerts(
    airflow_stack: AirflowStack,
) -> None:
    stack = airflow_stack
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    key = day.isoformat()
    stack.client.unpause("ingest_transactions")  # schedules the latest partition: yesterday
    stack.wait_until(lambda: _states(stack, key).get("wait_for_drop") == "deferred", 180, f"the {key} sensor")

    late = stack.wait_until(
        lambda: [a for a in read_alerts_or_none(stack) if a["event"] == "drop_late"],
        240,
        "the deadline alert (scheduler, then triggerer)",
        every=3,
    )
    assert late[0]["day"] == key and late[0]["facts"]["dataset"] == "transactions"
    assert late[0]["facts"]["marker"].endswith(f"transactions/dt={key}/_SUCCESS")
    states = _states(stack, key)
    assert states["wait_for_drop"] == "deferred" and states["run"] == "running", states

    table = with_values(good_table("transactions", day), "amount", {0: -5.0, 1: -2.0})
    write_drop(str(stack.home / "landing"), "transactions", day, table)
    final = stack.wait_until(
        lambda: (s := _states(stack, key)).get("run") in ("success", "failed") and s, 300, f"the {key} run"
    )
    assert final["run"] == "failed" and final["validate_and_land"] == "failed", f"{final}\n{stack.log_tail()}"

    assert_story_alerts(stack.home, [key], [], [], late_drops=[key])
    samples = stack.wait_until(
        lambda: _quarantined_in_textfile(stack, key), 60, "the listener's refresh of mlops_lake.prom"
    )
    assert samples[("mlops_validation_failed_expectations", (("dataset", "transactions"), ("day", key)))] == 1


def read_alerts_or_none(stack: AirflowStack) -> list[dict]:
    try:
        return read_alerts(stack.home)
    except AssertionError:
        return []


def _quarantined_in_textfile(stack: AirflowStack, key: str) -> dict | None:
    """The lake's textfile once it flags ``key`` quarantined (the failed task's listener wrote it)."""
    path = stack.home / "metrics" / "mlops_lake.prom"
    if not path.exists():
        return None
    from prometheus_client.parser import text_string_to_metric_families

    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    flag = found.get(("mlops_drop_quarantined", (("dataset", "transactions"), ("day", key))))
    return found if flag == 1 else None
