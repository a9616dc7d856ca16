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
* **Reruns and backfills**: a day that already has predictions is scored again by the model
  versions recorded in them, so its predictions and its drift comparison stay as they were after
  a promotion. Trigger with `rescore_with_current_champion: true` to score it with today's
  `champion` (and `challenger`) instead. A recorded version deleted from the registry fails the
  task with a message naming that param.
"""

from __future__ import annotations

from airflow.sdk import Param, PartitionedAssetTimetable, dag, task

from include.mlops.orchestration import START_DATE, day_param, default_args, features_asset, predictions_asset


@dag(
    schedule=PartitionedAssetTimetable(assets=features_asset()),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=2,
    default_args=default_args("score_transactions"),
    params={
        "day": day_param("Day to score"),
        "rescore_with_current_champion": Param(
            False,
            type="boolean",
            description="Score a day that already has predictions with today's champion, "
            "not with the versions recorded in them",
        ),
    },
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

        current = bool(context["params"].get("rescore_with_current_champion", False))
        try:
            return score_day(partition_day(context), rescore_with_current_champion=current)
        except NoChampionError as exc:
            raise AirflowSkipException(str(exc)) from exc

    score()


score_transactions()
