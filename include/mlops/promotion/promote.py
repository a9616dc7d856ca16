"""Judge the challenger against the champion on the same out-of-time days; move ``champion`` only if it wins.

Flow of :func:`evaluate_and_promote_run` (the ``evaluate_and_promote`` task of ``train_model``):

1. find the version registered by that Airflow run (version tag ``airflow_run_id``,
   :func:`~.evaluation.version_for_run`);
2. rebuild the OOT days recorded on it (tags ``oot_start`` / ``oot_end``) exactly as training saw
   them and score them with the challenger and the current champion (:func:`~.evaluation.evaluate`);
3. under the model's lock: re-read the champion (scoring it too if another run moved it
   meanwhile), apply the policy (:func:`~.policy.decide`), and move the ``champion`` alias if it
   says so. The alias move is the single point of commit; ``previous_champion`` keeps the version
   it replaced (the natural :func:`rollback` target);
4. record the decision: tags on the challenger version (``decision``, ``decision_reason``,
   both models' metrics), the tag ``last_decision`` on the registered model (and
   ``last_promotion`` when promoted), and an evaluation report
   ``promotion/evaluation-<time>.json`` in the challenger's run.

:func:`rollback` is an operator's move of the alias, under the same lock, recorded the same way.
The knobs are :class:`~include.mlops.core.policies.PromotionPolicy`, built once per call; the lock
is :func:`include.mlops.registry.model_lock`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.evaluation import Evaluation, PromotionError, evaluate, version_for_run
from include.mlops.promotion.policy import ALREADY, Decision, already_champion, decide

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

ROLLED_BACK = "rolled_back"
"""Outcome of a :func:`rollback` that moved the alias (to the champion itself: :data:`~.policy.ALREADY`)."""


@contextlib.contextmanager
def promotion_lock(settings: Settings | None = None, timeout: float | None = None) -> Iterator[str]:
    """The model's lock (:func:`include.mlops.registry.model_lock`) for promotions and rollbacks.

    ``timeout`` defaults to the policy's ``lock_timeout`` (``MLOPS_PROMOTION_LOCK_TIMEOUT``).
    Yields the lock's description; raises :class:`~include.mlops.registry.LockTimeout`.
    """
    if timeout is None:
        timeout = PromotionPolicy.from_env().lock_timeout
    with registry.model_lock(timeout, settings) as held:
        yield held


def _move_champion(client: Any, name: str, version: int, current: int | None) -> None:
    """Point ``champion`` at ``version`` and ``previous_champion`` at the one it replaces: the commit."""
    registry.move_alias(client, name, registry.CHAMPION, version)
    if current is not None:
        registry.move_alias(client, name, registry.PREVIOUS_CHAMPION, current)


# --------------------------------------------------------------------------------------------------
# Promotion


def evaluate_and_promote_run(airflow_run_id: str, settings: Settings | None = None) -> dict:
    """Judge the version registered by ``airflow_run_id`` against the champion; promote it if it wins.

    Returns ``{"model", "challenger_version", "champion_before", "champion_after", "outcome",
    "promoted", "reason", "challenger_metrics", "champion_metrics"}``. Safe to rerun: a version that
    is already champion is reported as such.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    policy = PromotionPolicy.from_env(seed=s.seed)
    challenger = version_for_run(airflow_run_id, s)
    seen = registry.champion_version(s)
    logger.info("%s: judging version %s against champion %s", s.model_name, challenger, seen)
    evaluation = evaluate(challenger, seen, s)

    with promotion_lock(s, policy.lock_timeout) as lock:
        current = registry.champion_version(s)
        if current != seen:
            logger.info("the champion moved to %s during the evaluation: judging against it", current)
            evaluation = evaluate(challenger, current, s, frame=evaluation.frame)
        if current == challenger:
            decision = already_champion(challenger)
        else:
            decision = decide(evaluation.labels, evaluation.challenger, evaluation.champion, policy)
        if decision.promote:
            _move_champion(client, s.model_name, challenger, current)
        after = challenger if decision.promote else current
        if decision.outcome != ALREADY:  # a rerun keeps the record of the decision that promoted it
            report = _report(s.model_name, evaluation, decision, policy, current, lock, airflow_run_id)
            _record_decision(client, s.model_name, evaluation, decision, report, current, after)

    logger.info("%s version %s: %s (%s)", s.model_name, challenger, decision.outcome, decision.reason)
    return {
        "model": s.model_name,
        "challenger_version": challenger,
        "champion_before": current,
        "champion_after": after,
        "outcome": decision.outcome,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_metrics": decision.challenger_metrics,
        "champion_metrics": decision.champion_metrics,
    }


def _report(
    name: str,
    evaluation: Evaluation,
    decision: Decision,
    policy: PromotionPolicy,
    before: int | None,
    lock: str,
    airflow_run_id: str,
) -> dict[str, Any]:
    """The evaluation report logged in the challenger's run: data, policy, lock and decision."""
    return {
        "model": name,
        "challenger_version": evaluation.challenger.version,
        "champion_version_before": before,
        "decided_at": registry.now(),
        "oot_start": evaluation.oot_start.isoformat(),
        "oot_end": evaluation.oot_end.isoformat(),
        "rows": evaluation.rows,
        "positives": int(evaluation.labels.sum()),
        "data_fingerprint": evaluation.data_fingerprint,
        "data_unchanged_since_training": evaluation.data_unchanged,
        "policy": policy.as_dict(),
        "lock": lock,
        "decision": decision.as_dict(),
        "airflow_run_id": airflow_run_id,
    }


def _decision_tags(evaluation: Evaluation, decision: Decision, at: str, before: int | None) -> dict[str, Any]:
    """The tags of the challenger version: the outcome, its reason and both models' metrics."""
    tags: dict[str, Any] = {
        "decision": decision.outcome,
        "decision_reason": decision.reason,
        "decided_at": at,
        "compared_with": before if before is not None else "none",
        "evaluation_rows": evaluation.rows,
    }
    for prefix, metrics in (
        (registry.CHALLENGER, decision.challenger_metrics),
        (registry.CHAMPION, decision.champion_metrics),
    ):
        for key, value in (metrics or {}).items():
            tags[f"{prefix}_{key}"] = f"{value:.6f}"
    if "delta_pr_auc" in decision.comparison:
        tags["delta_pr_auc"] = f"{decision.comparison['delta_pr_auc']:+.6f}"
    boot = decision.comparison.get("bootstrap")
    if boot:
        tags["delta_pr_auc_interval"] = json.dumps([round(v, 6) for v in boot["delta_pr_auc_interval"]])
    return tags


def _record_decision(
    client: Any,
    name: str,
    evaluation: Evaluation,
    decision: Decision,
    report: dict[str, Any],
    before: int | None,
    after: int | None,
) -> None:
    """Tags on the challenger version and the registered model, and the report in the challenger's run."""
    version = evaluation.challenger.version
    assert version is not None
    at = report["decided_at"]
    registry.set_version_tags(client, name, version, _decision_tags(evaluation, decision, at, before))
    summary = {
        "action": "promotion",
        "version": version,
        "outcome": decision.outcome,
        "champion_before": before,
        "champion_after": after,
        "reason": decision.reason[:1000],
        "at": at,
        "challenger_metrics": {k: round(v, 6) for k, v in decision.challenger_metrics.items()},
        "champion_metrics": {k: round(v, 6) for k, v in (decision.champion_metrics or {}).items()},
    }
    client.set_registered_model_tag(name, "last_decision", registry.cut(json.dumps(summary)))
    if decision.promote:
        client.set_registered_model_tag(name, "last_promotion", registry.cut(json.dumps(summary)))
    run_id = client.get_model_version(name, str(version)).run_id
    if run_id:
        stamp = at.replace(":", "").replace("+", "Z")
        client.log_dict(run_id, report, f"promotion/evaluation-{stamp}.json")


# --------------------------------------------------------------------------------------------------
# Rollback


@dataclass(frozen=True)
class _Rollback:
    """One rollback as recorded: the target, the champion it replaced, and why."""

    version: int
    before: int | None
    outcome: str
    reason: str
    at: str
    lock: str


def rollback(version: int, reason: str, settings: Settings | None = None) -> dict:
    """Point ``champion`` at ``version`` again (an operator's decision), recording the reason.

    Runs under the model's lock. ``previous_champion`` keeps the version it replaced. The target
    version gets the tags ``decision=rollback``, ``rollback_reason``, ``rolled_back_at`` and
    ``rolled_back_from``; the replaced one ``demoted_by_rollback``; the registered model
    ``last_decision``. Returns ``{"model", "champion_before", "champion_after", "outcome", "reason"}``.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    _check_rollback(client, s.model_name, version, reason)
    policy = PromotionPolicy.from_env(seed=s.seed)
    with promotion_lock(s, policy.lock_timeout) as lock:
        current = registry.champion_version(s)
        at = registry.now()
        outcome = ALREADY
        if current != version:
            _move_champion(client, s.model_name, version, current)
            outcome = ROLLED_BACK
        _record_rollback(client, s.model_name, _Rollback(version, current, outcome, reason, at, lock))
    logger.info("%s: champion %s -> %s (%s): %s", s.model_name, current, version, outcome, reason)
    return {
        "model": s.model_name,
        "champion_before": current,
        "champion_after": version,
        "outcome": outcome,
        "reason": reason,
    }


def _check_rollback(client: Any, name: str, version: int, reason: str) -> None:
    """Raise :class:`PromotionError` without a reason, or when ``version`` does not exist."""
    from mlflow.exceptions import MlflowException

    if not reason or not reason.strip():
        raise PromotionError("a rollback needs a reason (it is recorded on the model)")
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise PromotionError(
            f"{name} has no version {version}: cannot roll back to it "
            f"(see the registry for the versions that exist)"
        ) from None


def _record_rollback(client: Any, name: str, move: _Rollback) -> None:
    """Tags on the target version, on the version it demoted, and ``last_decision`` on the model."""
    registry.set_version_tags(
        client,
        name,
        move.version,
        {
            "decision": "rollback",
            "rollback_reason": move.reason,
            "rolled_back_at": move.at,
            "rolled_back_from": move.before,
        },
    )
    if move.before is not None and move.before != move.version:
        registry.set_version_tags(
            client,
            name,
            move.before,
            {"demoted_by_rollback": f"to version {move.version} at {move.at}: {move.reason}"},
        )
    summary = {
        "action": "rollback",
        "version": move.version,
        "outcome": move.outcome,
        "champion_before": move.before,
        "champion_after": move.version,
        "reason": move.reason[:1000],
        "at": move.at,
        "lock": move.lock,
    }
    client.set_registered_model_tag(name, "last_decision", registry.cut(json.dumps(summary)))
