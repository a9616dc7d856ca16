"""monitor_drift's retrain wiring: one train_model run id per day, skipped when it exists, marked.

The DAG file is loaded as the scheduler loads it; the operator and the task functions are
inspected and called with a check's result (the request store is replaced by a recorder).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest

from include.mlops import monitoring
from include.mlops.monitoring.triggers import train_run_id

ROOT = Path(__file__).resolve().parents[3]
DAY = dt.date(2026, 1, 15)
RESULT = {
    "day": DAY.isoformat(),
    "retrain": True,
    "reissue": False,
    "reason": "drift on 2026-01-15: 3/8 key features drifted",
    "train_run_id": train_run_id(DAY),
    "explanation": "retrain (features): drift on 2026-01-15",
    "retrain_conf": {
        "reason": "drift on 2026-01-15: 3/8 key features drifted",
        "as_of": "2026-01-24",
        "window_days": 14,
        "oot_days": 2,
    },
}


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "monitor_drift.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["monitor_drift"]


class FakeTI:
    """Answers ``xcom_pull(task_ids='check_drift')`` with a check's result."""

    def xcom_pull(self, task_ids: str) -> dict:
        assert task_ids == "check_drift"
        return RESULT


def render(template: str) -> str:
    return jinja2.Template(template).render(ti=FakeTI())


def test_the_trigger_uses_the_days_run_id_and_skips_a_run_that_exists(dag: Any) -> None:
    trigger = dag.get_task("retrain_on_drift")
    assert trigger.trigger_dag_id == "train_model"
    assert render(trigger.trigger_run_id) == "drift__2026-01-15"
    assert trigger.skip_when_already_exists is True
    assert trigger.reset_dag_run is False
    # The conf renders as JSON, which the operator loads: the window's numbers stay numbers.
    assert json.loads(render(trigger.conf)) == {
        "reason": RESULT["reason"],
        "as_of": "2026-01-24",
        "window_days": 14,
        "oot_days": 2,
    }


def test_the_request_is_marked_after_the_trigger_even_when_its_run_existed(dag: Any) -> None:
    mark = dag.get_task("mark_retrain_triggered")
    assert dag.get_task("retrain_on_drift").downstream_task_ids == {"mark_retrain_triggered"}
    # A skipped trigger (the run already existed) still marks; a failed one does not.
    assert mark.trigger_rule == "none_failed"
    # No retrain: the short-circuit skips the trigger and the mark, whatever their trigger rules.
    gate = dag.get_task("drift_calls_for_retraining")
    assert gate.ignore_downstream_trigger_rules is True
    assert "mark_retrain_triggered" in {t.task_id for t in gate.get_flat_relatives(upstream=False)}


def test_the_mark_task_marks_the_days_request_with_its_run_id(
    dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def record(day: str, run_id: str) -> dict:
        calls.append((day, run_id))
        return {"day": day, "train_run_id": run_id, "marked": True}

    monkeypatch.setattr(monitoring, "mark_triggered", record)
    answer = dag.get_task("mark_retrain_triggered").python_callable(RESULT)
    assert calls == [("2026-01-15", "drift__2026-01-15")]
    assert answer["marked"] is True
