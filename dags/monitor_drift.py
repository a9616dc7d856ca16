"""
### monitor_drift

Watches each scored day for drift and asks for retraining when the world has changed.

* **Runs when**: the `predictions` asset gets a partition (one run per day, that day's key).
* **check_drift**: an Evidently report of feature drift and prediction drift of the day (sampled,
  so a 1M-row day takes bounded time) against the champion's reference sample, plus the model's
  performance on the earlier days whose labels have arrived. HTML and JSON are saved under
  `MLOPS_REPORTS_URL/drift/dt=DAY/` and logged to MLflow.
* **retrain_on_drift**: when the policy (settings `MLOPS_DRIFT_*`) says the drift matters and no
  drift-triggered retrain happened within the cooldown, triggers `train_model` with the reason
  (which columns, how much, which day); the reason ends up as a tag on the MLflow run.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PartitionedAssetTimetable, dag, task

from include.mlops.orchestration import START_DATE, default_args, drift_asset, predictions_asset


@dag(
    schedule=PartitionedAssetTimetable(assets=predictions_asset()),
    start_date=START_DATE,
    catchup=False,
    # Two days at a time in a backfill: each day's cooldown decision is taken under the model's
    # lock, and a day decided after a later one defers to that later day's request.
    max_active_runs=2,
    default_args=default_args("monitor_drift"),
    params={"day": Param(None, type=["null", "string"], format="date", description="Day to check")},
    tags=["mlops", "monitoring", "evidently"],
    doc_md=__doc__,
)
def monitor_drift():
    @task(outlets=[drift_asset()], pool="mlops_heavy")
    def check_drift(**context) -> dict:
        """Build the day's drift report and decide whether it calls for retraining."""
        from include.mlops.monitoring import monitor_day
        from include.mlops.orchestration import run_day

        return monitor_day(run_day(context), airflow_run_id=context["run_id"])

    @task.short_circuit
    def drift_calls_for_retraining(verdict: dict) -> bool:
        """Continue to the trigger only when the policy and the cooldown both say so."""
        import logging

        logging.getLogger("include.mlops.monitoring").info("%s", verdict.get("explanation", verdict))
        return bool(verdict.get("retrain"))

    verdict = check_drift()
    retrain_on_drift = TriggerDagRunOperator(
        task_id="retrain_on_drift",
        trigger_dag_id="train_model",
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='check_drift')['reason'] }}",
            "as_of": "{{ ti.xcom_pull(task_ids='check_drift')['day'] }}",
        },
        wait_for_completion=False,
    )
    drift_calls_for_retraining(verdict) >> retrain_on_drift


monitor_drift()
