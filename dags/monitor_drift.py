"""
### monitor_drift

Watches each scored day for drift and asks for retraining when the world has changed.

* **Runs when**: the `predictions` asset gets a partition (one run per day, that day's key).
* **check_drift**: an Evidently report of feature drift and prediction drift of the day (sampled,
  so a 1M-row day takes bounded time) against the champion's reference sample, plus the model's
  performance on the earlier days whose labels have arrived. HTML and JSON are saved under
  `MLOPS_REPORTS_URL/drift/dt=DAY/` and logged to MLflow; the task's "Evidently drift report"
  and "MLflow run" buttons open them.
* **retrain_on_drift**: when the policy (settings `MLOPS_DRIFT_*`) says the drift matters and no
  drift-triggered retrain happened within the cooldown, triggers `train_model` with the reason
  (which columns, how much, which day); the reason ends up as a tag on the MLflow run. The
  retrain learns the drifted world: it waits, deferred, until `MLOPS_DRIFT_RETRAIN_LABELLED_DAYS`
  drifted days are fully labelled, then trains on them only. The
  `train_model` run id is derived from the day (`drift__YYYY-MM-DD`): a retry, or a rerun of the
  day, never starts a second run (an existing one skips the task).
* **mark_retrain_triggered**: marks the request, recorded as pending by `check_drift` on the
  registered model, as triggered (tag `drift_retrain_triggered_run_id`). Until then a rerun of
  the day asks for the retrain again instead of answering "already requested", so a failure
  between the check and the trigger never loses the retrain.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import PartitionedAssetTimetable, TriggerRule, dag, task

from include.mlops.orchestration import (
    START_DATE,
    day_param,
    default_args,
    drift_asset,
    notifier,
    predictions_asset,
)


@dag(
    schedule=PartitionedAssetTimetable(assets=predictions_asset()),
    start_date=START_DATE,
    catchup=False,
    # Two days at a time in a backfill: each day's cooldown decision is taken under the model's
    # lock, and a day decided after a later one defers to that later day's request.
    max_active_runs=2,
    default_args=default_args("monitor_drift"),
    params={"day": day_param("Day to check")},
    tags=["mlops", "monitoring", "evidently"],
    doc_md=__doc__,
)
def monitor_drift():
    # Drift found (a retrain requested, or held by the cooldown) alerts, with the reason.
    @task(outlets=[drift_asset()], pool="mlops_heavy", on_success_callback=notifier("drift"))
    def check_drift(**context) -> dict:
        """Build the day's drift report and decide whether it calls for retraining."""
        from include.mlops.monitoring import monitor_day
        from include.mlops.orchestration import links, partition_day

        result = monitor_day(partition_day(context), airflow_run_id=context["run_id"])
        links.push(
            context,
            **{
                links.DRIFT_REPORT: links.ui_path(result["report_html_url"]),
                links.MLFLOW_RUN: links.mlflow_run_link(
                    result["mlflow_experiment_id"], result["mlflow_run_id"]
                ),
            },
        )
        return result

    @task.short_circuit
    def drift_calls_for_retraining(verdict: dict) -> bool:
        """Continue to the trigger only when the policy and the cooldown both say so."""
        import logging

        logging.getLogger("include.mlops.monitoring").info("%s", verdict.get("explanation", verdict))
        return bool(verdict.get("retrain"))

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def mark_retrain_triggered(verdict: dict) -> dict:
        """Mark the day's request triggered (also when its `train_model` run already existed)."""
        from include.mlops.monitoring import mark_triggered

        return mark_triggered(verdict["day"], verdict["train_run_id"])

    verdict = check_drift()
    retrain_on_drift = TriggerDagRunOperator(
        task_id="retrain_on_drift",
        trigger_dag_id="train_model",
        # One run id per day: a retried or re-issued trigger finds its run instead of adding one.
        trigger_run_id="{{ ti.xcom_pull(task_ids='check_drift')['train_run_id'] }}",
        skip_when_already_exists=True,
        # The retrain's reason, the day it waits for and trains as of, its window (JSON: numbers stay
        # numbers).
        conf="{{ ti.xcom_pull(task_ids='check_drift')['retrain_conf'] | tojson }}",
        wait_for_completion=False,
    )
    drift_calls_for_retraining(verdict) >> retrain_on_drift >> mark_retrain_triggered(verdict)


monitor_drift()
