"""
### score_transactions

Scores one day of transactions with the production model, and the challenger in shadow.

* **Runs when**: the `features` asset gets a partition (one run per day, that day's key).
* **score**: features come from the offline store point-in-time (`get_historical_features`,
  the same path as training, so there is no train/serve skew and a backfilled day is scored
  with the features it had then); the `champion` alias scores, the `challenger` (if it is a
  different version) scores in shadow. Writes `MLOPS_LAKE_URL/predictions/dt=DAY/` atomically with
  both model versions, and emits the `predictions` asset. Before the first promotion there is no
  champion: the task skips and nothing downstream runs for that day.
"""

from __future__ import annotations

from airflow.sdk import PartitionedAssetTimetable, dag, task

from include.mlops.orchestration import START_DATE, day_param, default_args, features_asset, predictions_asset


@dag(
    schedule=PartitionedAssetTimetable(assets=features_asset()),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=2,
    default_args=default_args("score_transactions"),
    params={"day": day_param("Day to score")},
    tags=["mlops", "scoring", "mlflow"],
    doc_md=__doc__,
)
def score_transactions():
    @task(outlets=[predictions_asset()], pool="mlops_heavy")
    def score(**context) -> dict:
        """Score the day with champion and shadow challenger; write the predictions partition."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops.orchestration import partition_day
        from include.mlops.scoring import NoChampionError, score_day

        try:
            return score_day(partition_day(context))
        except NoChampionError as exc:
            raise AirflowSkipException(str(exc)) from exc

    score()


score_transactions()
