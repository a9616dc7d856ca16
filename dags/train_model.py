"""
### train_model

Trains the fraud model, judges it against the one in production, and promotes it only if it wins.

* **Runs when**: nightly at 02:00 UTC (`MLOPS_TRAIN_CRON`), and whenever `monitor_drift`
  triggers it with the drift as its `reason` (under a cooldown). One training at a time.
* **wait_for_labels**: waits, deferred, for the labels of the day the run trains as of (`as_of`,
  else the night before the logical date) to be in the lake: a nightly run finds them in; a
  drift retrain waits there until its drifted days are fully labelled.
* **train**: `python -m include.mlops train ...` builds the training set from Feast
  (`get_historical_features` over a trailing window of fully labelled days), trains XGBoost (on
  the GPU when there is one), logs everything to MLflow and registers the version as
  `challenger`. With `MLOPS_TRAINING_BACKEND=kubernetes` the same command runs in a
  KubernetesPodOperator pod on the GPU node pool; with `local` (default) as a subprocess.
* **evaluate_and_promote**: challenger vs champion on the same out-of-time days (PR-AUC and
  recall at 1% FPR with bootstrap intervals); the `champion` alias moves only when the policy
  says so, and the decision is recorded on the version.
* **rollback**: with the `rollback_to` param set, no training happens: `champion` moves back to
  that version, recording `reason`, which must then say why (the default "nightly schedule" is
  refused). A version the promotion gate rejected also needs `force_rollback`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from include.mlops.core.settings import settings
from include.mlops.orchestration import START_DATE, default_args, model_asset, training_labels_sensor
from include.mlops.orchestration.training_backend import TRAINING_ARGV, kubernetes_training_operator

DEFAULT_REASON = "nightly schedule"


@dag(
    # MLOPS_TRAIN_CRON=none leaves only drift-triggered and manual runs (the demo replays history).
    schedule=CronTriggerTimetable(settings().train_cron, timezone="UTC") if settings().train_cron else None,
    start_date=START_DATE,
    catchup=False,
    # A drift retrain may wait days for its labels (deferred, no worker slot) while nightly runs go
    # on; training itself runs one at a time (the `mlops_training` pool) and promotions take the
    # model's lock, so concurrent runs cannot interleave their decisions.
    max_active_runs=3,
    default_args=default_args("train_model"),
    params={
        "reason": Param(
            DEFAULT_REASON, type="string", description="Why this run trains (or rolls back: then required)"
        ),
        "as_of": Param(None, type=["null", "string"], format="date", description="Train as of this day"),
        "window_days": Param(14, type="integer", minimum=3, description="Labelled days to train on"),
        "oot_days": Param(3, type="integer", minimum=1, description="Out-of-time days to judge on"),
        "rollback_to": Param(None, type=["null", "integer"], description="Roll champion back to it"),
        "force_rollback": Param(
            False, type="boolean", description="Allow rolling back to a version the promotion gate rejected"
        ),
    },
    tags=["mlops", "training", "mlflow", "gpu"],
    doc_md=__doc__,
)
def train_model():
    @task.branch
    def choose(**context) -> str:
        """Roll back when asked to, train otherwise."""
        return "rollback" if context["params"].get("rollback_to") else "wait_for_labels"

    if settings().training_backend == "kubernetes":
        train = kubernetes_training_operator(
            task_id="train", pool="mlops_training", execution_timeout=dt.timedelta(hours=6)
        )
    else:

        @task(task_id="train", pool="mlops_training", execution_timeout=dt.timedelta(hours=6))
        def train_locally(argv: list[str]) -> None:
            """Run the training entrypoint as a local process (same argv as the pod)."""
            from include.mlops.orchestration.training_backend import run_local_training

            run_local_training(argv)

        train = train_locally(TRAINING_ARGV)

    @task(outlets=[model_asset()], pool="mlops_heavy")
    def evaluate_and_promote(**context) -> dict:
        """Compare this run's challenger with the champion and move the alias if it wins."""
        from include.mlops.promotion import evaluate_and_promote_run

        return evaluate_and_promote_run(airflow_run_id=context["run_id"])

    @task(outlets=[model_asset()])
    def rollback(**context) -> dict:
        """Move `champion` back to the requested version, recording the reason (not the default one).

        A refusal (no reason, no such version, a rejected version without `force_rollback`) fails
        the task at once: retrying cannot change it.
        """
        from airflow.sdk.exceptions import AirflowFailException

        from include.mlops.promotion import PromotionError
        from include.mlops.promotion import rollback as rollback_champion

        params = context["params"]
        reason = (params.get("reason") or "").strip()
        if not reason or reason == DEFAULT_REASON:
            raise AirflowFailException(
                f"rollback_to={params['rollback_to']} needs a `reason` param saying why "
                f"(not the default {DEFAULT_REASON!r}): it is recorded on the model"
            )
        try:
            return rollback_champion(
                int(params["rollback_to"]), reason=reason, force=bool(params.get("force_rollback"))
            )
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from exc

    branch = choose()
    branch >> training_labels_sensor() >> train >> evaluate_and_promote()
    branch >> rollback()


train_model()
