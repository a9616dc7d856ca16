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
  the GPU when there is one), logs everything to MLflow (with the training and out-of-time rows
  as datasets) and registers the version as `challenger` with its operating threshold. With
  `MLOPS_TRAINING_BACKEND=kubernetes` the same command runs in a KubernetesPodOperator pod on the
  GPU node pool; with `local` (default) as a subprocess.
* **evaluate_and_promote**: the promotion gate on the same out-of-time days: challenger vs
  champion overall (PR-AUC and recall at 1% FPR with bootstrap intervals), per slice (channel,
  card present, merchant category, card holder's country, amount band, new customers) and a
  fairness audit per card-holder region at the operating point; plots and tables on the
  challenger's MLflow run; the `champion` alias moves only when the gate says so, and the
  decision is recorded on the version.
* **With `MLOPS_PROMOTION_APPROVAL=required`**: **judge** runs the gate; a challenger it would
  promote waits in **review** (Airflow human-in-the-loop: *Required actions*) with the gate's
  summary and a link to the MLflow run. *Approve* moves the alias (**conclude_review**);
  *Reject*, or no answer within `MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS`, records the rejection
  with the reviewer's comment.
* **rollback**: with the `rollback_to` param set, no training happens: `champion` moves back to
  that version, recording `reason`, which must then say why (the default "nightly schedule" is
  refused). A version the promotion gate (or its reviewer) rejected also needs `force_rollback`.

The "MLflow run" button of train and the promotion tasks opens the challenger's run.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import settings
from include.mlops.orchestration import (
    START_DATE,
    default_args,
    model_asset,
    notifier,
    training_labels_sensor,
)
from include.mlops.orchestration.training_backend import TRAINING_ARGV, kubernetes_training_operator

DEFAULT_REASON = "nightly schedule"
# The DAG's shape is chosen when the file is parsed, like the training backend.
APPROVAL = PromotionPolicy.from_env()

logger = logging.getLogger(__name__)


def push_run_link(context, result: dict | None = None) -> str | None:
    """Push the challenger's "MLflow run" link (from a promotion result, else looked up); return it."""
    from include.mlops.orchestration import links

    try:
        if result is None:
            from include.mlops.promotion import challenger_run

            experiment_id, run_id = challenger_run(context["run_id"])
        else:
            experiment_id, run_id = result.get("experiment_id"), result.get("run_id")
        link = links.mlflow_run_link(experiment_id, run_id)
        links.push(context, **{links.MLFLOW_RUN: link})
        return link
    except Exception as exc:  # a missing button must not fail (and retrain) a finished task
        logger.warning("no MLflow run link for %s: %s", context["run_id"], exc)
        return None


@dag(
    # MLOPS_TRAIN_CRON=none leaves only drift-triggered and manual runs (the demo replays history).
    schedule=CronTriggerTimetable(settings().train_cron, timezone="UTC") if settings().train_cron else None,
    start_date=START_DATE,
    catchup=False,
    # A drift retrain may wait days for its labels (deferred, no worker slot) while nightly runs go
    # on; training itself runs one at a time (the `mlops_training` pool) and promotions take the
    # model's lock, so concurrent runs cannot interleave their decisions.
    max_active_runs=4,
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
            task_id="train",
            pool="mlops_training",
            queue=settings().training_queue,
            execution_timeout=dt.timedelta(hours=6),
        )
    else:

        @task(
            task_id="train",
            pool="mlops_training",
            queue=settings().training_queue,
            execution_timeout=dt.timedelta(hours=6),
        )
        def train_locally(argv: list[str], **context) -> None:
            """Run the training entrypoint as a local process (same argv as the pod)."""
            from include.mlops.orchestration.training_backend import run_local_training

            run_local_training(argv)
            push_run_link(context)

        train = train_locally(TRAINING_ARGV)

    @task(outlets=[model_asset()], on_success_callback=notifier("rollback"))
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
    branch >> rollback()
    if not APPROVAL.approval_required:

        @task(outlets=[model_asset()], pool="mlops_heavy", on_success_callback=notifier("promotion"))
        def evaluate_and_promote(**context) -> dict:
            """Judge this run's challenger against the champion and move the alias if it wins."""
            from include.mlops.promotion import evaluate_and_promote_run

            result = evaluate_and_promote_run(airflow_run_id=context["run_id"], review=False)
            push_run_link(context, result)
            return result

        branch >> training_labels_sensor() >> train >> evaluate_and_promote()
        return

    from airflow.providers.standard.operators.hitl import HITLOperator

    # A verdict awaiting review, or a final one, alerts (its XCom "promotion"); so does the answer.
    @task.branch(
        outlets=[model_asset()], pool="mlops_heavy", on_success_callback=notifier("promotion", "promotion")
    )
    def judge(**context) -> str | None:
        """Run the gate; a challenger it would promote goes to review, any other verdict is final."""
        from include.mlops.promotion import evaluate_and_promote_run, review_body

        result = evaluate_and_promote_run(airflow_run_id=context["run_id"], review=True)
        link = push_run_link(context, result)
        context["ti"].xcom_push(key="promotion", value=result)
        context["ti"].xcom_push(
            key="review", value=review_body(result, link, APPROVAL.approval_timeout_hours)
        )
        return "review" if result["awaiting_review"] else None

    review = HITLOperator(
        task_id="review",
        subject="Promote {{ ti.xcom_pull(task_ids='judge', key='promotion')['model'] }} version "
        "{{ ti.xcom_pull(task_ids='judge', key='promotion')['challenger_version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='judge', key='review') }}",
        options=["Approve", "Reject"],
        defaults=["Reject"],  # what a time-out answers
        params={"comment": Param("", type="string", description="Why (recorded on the version)")},
        response_timeout=dt.timedelta(hours=APPROVAL.approval_timeout_hours),
        retries=0,  # a review is asked once; a rerun is a new question
    )

    @task(outlets=[model_asset()], on_success_callback=notifier("promotion"))
    def conclude_review(**context) -> dict:
        """Apply the reviewer's answer: move the alias, or record the rejection with the comment."""
        from include.mlops.promotion import conclude_review as conclude

        result = conclude(context["run_id"], context["ti"].xcom_pull(task_ids="review"))
        push_run_link(context, result)
        return result

    branch >> training_labels_sensor() >> train >> judge() >> review >> conclude_review()


train_model()
