"""Judge the challenger against the champion on the same out-of-time days; move ``champion`` only if it wins.

Flow of :func:`evaluate_and_promote_run` (the ``evaluate_and_promote`` task of ``train_model``, or
its ``judge`` task when a reviewer must approve):

1. find the version registered by that Airflow run (version tag ``airflow_run_id``,
   :func:`~.evaluation.version_for_run`);
2. rebuild the OOT days recorded on it (tags ``oot_start`` / ``oot_end``) exactly as training saw
   them and score them with the challenger and the current champion (:func:`~.evaluation.evaluate`);
3. apply the gate (:func:`~.gate.judge`: the overall rules, per-slice non-regression, the fairness
   audit) and log its plots and tables on the challenger's run (:mod:`.artifacts`), before taking
   the lock: the heavy part never holds it;
4. under the model's lock: re-read the champion (judging again if another run moved it
   meanwhile), then commit and record (:func:`~.records.commit_and_record`): the decision on the
   challenger version with ``decision_status=pending``; when promoted, ``previous_champion`` to
   the replaced version, then ``champion`` to the challenger (the single point of commit);
   ``last_decision`` on the registered model (and ``last_promotion``); the evaluation report
   ``promotion/evaluation-<decided_at>.json`` in the challenger's run; ``decision_status=recorded``.

With a review (``review=True``, ``MLOPS_PROMOTION_APPROVAL=required``), a challenger the gate
would promote is recorded ``awaiting_approval`` instead (still pending, no alias moved); the
reviewer's answer is applied by :func:`~.approval.conclude_review`.

Every step is idempotent and a retry converges: a retry after a failure at any MLflow call of
step 4 ends with the same aliases and records as an uninterrupted run. Before the commit it decides
again against the same champion, reusing the pending decision's ``decided_at``; after it (the
challenger is champion, its decision still ``pending``) it judges against the recorded
``compared_with`` and replays the sequence instead of answering "already champion". A rerun of a
fully recorded promotion changes nothing.

The knobs are :class:`~include.mlops.core.policies.PromotionPolicy`, built once per call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.artifacts import decision_markdown, log_gate_artifacts
from include.mlops.promotion.evaluation import evaluate, run_of, version_for_run
from include.mlops.promotion.fairness import fairness_summary
from include.mlops.promotion.gate import judge, subgroups
from include.mlops.promotion.policy import AWAITING_APPROVAL, KEPT, PROMOTED, REJECTED, already_champion
from include.mlops.promotion.records import (
    Intent,
    commit_and_record,
    promotion_lock,
    read_intent,
)
from include.mlops.promotion.slices import slices_summary

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings
    from include.mlops.promotion.evaluation import Evaluation
    from include.mlops.promotion.policy import Decision


logger = logging.getLogger(__name__)

_UNFINISHED = (PROMOTED, KEPT, REJECTED, AWAITING_APPROVAL)
"""Decisions a retry completes with the same ``decided_at`` (the gate's verdicts, a review request)."""


@dataclass(frozen=True)
class _Plan:
    """Where a promotion stands: the champion it judges against and replaces, and when it decided.

    ``already``: the challenger is champion and its record complete (nothing to do); ``resumed``:
    the challenger is champion but its record unfinished (the recorded promotion is completed).
    """

    champion: int | None
    opponent: int | None
    at: str
    already: bool = False
    resumed: Intent | None = None


def _plan(client: Any, name: str, challenger: int) -> _Plan:
    """The plan of a promotion of ``challenger``, resuming an unfinished one recorded on it."""
    current = registry.alias_version(client, name, registry.CHAMPION)
    intent = read_intent(client, name, challenger)
    if current == challenger:
        if intent.pending and intent.decision == PROMOTED and intent.at:
            return _Plan(current, intent.replaced, intent.at, resumed=intent)
        return _Plan(current, current, registry.now(), already=True)
    at = intent.at if intent.unfinished(_UNFINISHED, current) else None
    return _Plan(current, current, at or registry.now())


@dataclass
class _Judged:
    """An evaluation, the gate's decision on it, the slice dimensions missing and what each took."""

    evaluation: Evaluation
    decision: Decision
    unavailable: list[str]
    summary: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def _judge(client: Any, s: Settings, challenger: int, opponent: int | None, policy: PromotionPolicy,
           frame: Any = None) -> _Judged:  # fmt: skip
    """Evaluate both models, apply the gate and log its artifacts on the challenger's run, timed."""
    started = time.perf_counter()
    evaluation = evaluate(challenger, opponent, s, frame=frame)
    evaluated = time.perf_counter()
    groups = subgroups(evaluation.frame)
    decision = judge(evaluation.labels, evaluation.challenger, evaluation.champion, policy, groups)
    decided = time.perf_counter()
    run_id = client.get_model_version(s.model_name, str(challenger)).run_id
    summary = decision_markdown(decision, evaluation, policy)
    if run_id:
        log_gate_artifacts(client, run_id, evaluation, decision, summary)
    logged = time.perf_counter()
    seconds = {
        "evaluation": round(evaluated - started, 2),
        "gate": round(decided - evaluated, 2),
        "artifacts": round(logged - decided, 2),
    }
    if run_id:
        client.log_metric(run_id, "promotion_gate_seconds", seconds["gate"] + seconds["artifacts"])
    logger.info("judged version %s against %s: %s (%s)", challenger, opponent, decision.outcome, seconds)
    return _Judged(evaluation, decision, groups.unavailable, summary, seconds)


def evaluate_and_promote_run(
    airflow_run_id: str, settings: Settings | None = None, *, review: bool | None = None
) -> dict:
    """Judge the version registered by ``airflow_run_id`` against the champion; promote it if it wins.

    ``review`` (default: ``MLOPS_PROMOTION_APPROVAL=required``) stops a promotion the gate allows
    at ``awaiting_approval``, for :func:`~.approval.conclude_review`. Returns the task's result:
    the decision, both models' metrics, the slices' and fairness summaries, the challenger's
    threshold and run, the timings and the reviewer's summary (every key is listed on
    :func:`_result`). Safe to retry after a failure at any step: the decision is committed and
    recorded as an uninterrupted run would have (an unfinished promotion is completed from its
    record). A rerun of a promotion recorded in full reports :data:`~.policy.ALREADY` and changes
    nothing.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    policy = PromotionPolicy.from_env(seed=s.seed)
    review = policy.approval_required if review is None else review
    challenger = version_for_run(airflow_run_id, s)
    seen = _plan(client, s.model_name, challenger)
    logger.info("%s: judging version %s against champion %s", s.model_name, challenger, seen.opponent)
    judged = None if seen.already else _judge(client, s, challenger, seen.opponent, policy)

    with promotion_lock(s, policy.lock_timeout) as lock:
        plan = _plan(client, s.model_name, challenger)
        if plan.already:
            decision, before, after = already_champion(challenger), plan.champion, plan.champion
        else:
            if judged is None or plan.opponent != seen.opponent:
                logger.info(
                    "the champion moved to %s during the evaluation: judging against it", plan.opponent
                )
                frame = judged.evaluation.frame if judged else None
                judged = _judge(client, s, challenger, plan.opponent, policy, frame)
            decision = _resumed(judged.decision, plan, review)
            before, after = plan.opponent, challenger if decision.promote else plan.opponent
            report = _report(s.model_name, judged, decision, policy, before, lock, airflow_run_id, plan.at)
            commit_and_record(client, s.model_name, challenger, decision, report)

    logger.info("%s version %s: %s (%s)", s.model_name, challenger, decision.outcome, decision.reason)
    return _result(client, s.model_name, challenger, decision, before, after, judged)


def _resumed(decision: Decision, plan: _Plan, review: bool) -> Decision:
    """The decision to record: a promotion already committed stays one (its record is completed);
    with a review, a promotion the gate allows waits for the reviewer."""
    if plan.resumed is not None and not decision.promote:
        logger.warning(
            "version %s was promoted (%s) but the policy now says %s: completing the promotion's record",
            plan.champion,
            plan.resumed.reason,
            decision.outcome,
        )
        reasons = (plan.resumed.reason,) if plan.resumed.reason else decision.reasons
        return dataclasses.replace(decision, promote=True, outcome=PROMOTED, reasons=reasons)
    if review and decision.promote and plan.resumed is None:
        return dataclasses.replace(decision, promote=False, outcome=AWAITING_APPROVAL)
    return decision


def _report(
    name: str,
    judged: _Judged,
    decision: Decision,
    policy: PromotionPolicy,
    before: int | None,
    lock: str,
    airflow_run_id: str,
    at: str,
) -> dict[str, Any]:
    """The evaluation report logged in the challenger's run: data, policy, lock and decision (with
    every slice's record and both fairness audits)."""
    evaluation = judged.evaluation
    return {
        "model": name,
        "challenger_version": evaluation.challenger.version,
        "champion_version_before": before,
        "decided_at": at,
        "oot_start": evaluation.oot_start.isoformat(),
        "oot_end": evaluation.oot_end.isoformat(),
        "rows": evaluation.rows,
        "positives": int(evaluation.labels.sum()),
        "data_fingerprint": evaluation.data_fingerprint,
        "data_unchanged_since_training": evaluation.data_unchanged,
        "policy": policy.as_dict(),
        "lock": lock,
        "decision": decision.as_dict(),
        "slice_dimensions_unavailable": judged.unavailable,
        "airflow_run_id": airflow_run_id,
    }


def _result(
    client: Any,
    name: str,
    challenger: int,
    decision: Decision,
    before: int | None,
    after: int | None,
    judged: _Judged | None,
) -> dict[str, Any]:
    """The task's result (its XCom, what the demo and a reviewer read).

    ``model``, ``challenger_version``, ``champion_before``, ``champion_after``, ``outcome``,
    ``promoted``, ``reason``, ``challenger_metrics``, ``champion_metrics``; ``slices``
    (:func:`~.slices.slices_summary`: judged, failing, too_small, not_compared, unavailable) and
    ``fairness`` (:func:`~.fairness.fairness_summary`), ``None`` when nothing was judged (a rerun
    of a recorded promotion); ``operating_threshold`` (the challenger's); ``awaiting_review``;
    ``experiment_id`` and ``run_id`` of the challenger's training run; ``seconds`` (evaluation,
    gate, artifacts); ``summary``, the decision as a reviewer reads it (Markdown, the run's
    ``evaluation/summary.md``).
    """
    experiment_id, run_id = run_of(client, name, challenger)
    evaluation = judged.evaluation if judged else None
    return {
        "model": name,
        "challenger_version": challenger,
        "champion_before": before,
        "champion_after": after,
        "outcome": decision.outcome,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_metrics": decision.challenger_metrics,
        "champion_metrics": decision.champion_metrics,
        "slices": slices_summary(list(decision.slices), judged.unavailable) if judged else None,
        "fairness": fairness_summary(decision.fairness) if judged else None,
        "operating_threshold": evaluation.challenger.threshold if evaluation else None,
        "awaiting_review": decision.outcome == AWAITING_APPROVAL,
        "experiment_id": experiment_id,
        "run_id": run_id,
        "seconds": judged.seconds if judged else None,
        "summary": judged.summary if judged else None,
    }
