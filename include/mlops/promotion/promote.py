"""Judge the challenger against the champion on the same out-of-time days; move ``champion`` only if it wins.

Flow of :func:`evaluate_and_promote_run` (the ``evaluate_and_promote`` task of ``train_model``):

1. find the version registered by that Airflow run (version tag ``airflow_run_id``);
2. rebuild the OOT days recorded on it (tags ``oot_start`` / ``oot_end``) exactly as training saw
   them (:func:`include.mlops.training.oot_frame`) and score them with the challenger and the
   current champion (:func:`evaluate`);
3. under the promotion lock: re-read the champion (scoring it too if another run moved it
   meanwhile), apply the policy (:func:`decide`), and move the ``champion`` alias if it says so.
   The alias move is the single point of commit; ``previous_champion`` keeps the version it
   replaced (the natural :func:`rollback` target);
4. record the decision: tags on the challenger version (``decision``, ``decision_reason``,
   both models' metrics), the tag ``last_decision`` on the registered model, and an evaluation
   report ``promotion/evaluation-<time>.json`` in the challenger's run.

The rules are :mod:`.policy` (pure), the scoring :mod:`.evaluate`; the lock is the model's lock of
:mod:`include.mlops.registry`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.evaluate import Evaluation, PromotionError, evaluate, version_for_run
from include.mlops.promotion.policy import ALREADY, DEFAULT_LOCK_TIMEOUT, Decision, Policy, _env_float, decide

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)


@contextlib.contextmanager
def promotion_lock(settings: Settings | None = None, timeout: float | None = None) -> Iterator[str]:
    """The model's lock (:func:`include.mlops.registry.model_lock`) for promotions and rollbacks."""
    timeout = _env_float("MLOPS_PROMOTION_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT) if timeout is None else timeout
    with registry.model_lock(timeout, settings) as held:
        yield held


def _report(
    name: str, evaluation: Evaluation, decision: Decision, policy: Policy, before: int | None, lock: str
) -> dict:
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
        "policy": asdict(policy),
        "lock": lock,
        "decision": decision.as_dict(),
    }


def evaluate_and_promote_run(airflow_run_id: str, settings: Settings | None = None) -> dict:
    """Judge the version registered by ``airflow_run_id`` against the champion; promote it if it wins.

    Returns ``{"model", "challenger_version", "champion_before", "champion_after", "outcome",
    "promoted", "reason", "challenger_metrics", "champion_metrics"}``. Safe to rerun: a version that
    is already champion is reported as such.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    policy = Policy.from_env(seed=s.seed)
    challenger = version_for_run(airflow_run_id, s)
    seen_champion = registry.champion_version(s)
    logger.info(f"{s.model_name}: judging version {challenger} against champion {seen_champion}")
    evaluation = evaluate(challenger, seen_champion, s)

    with promotion_lock(s) as lock:
        current = registry.champion_version(s)
        if current != seen_champion:
            logger.info(f"the champion moved to {current} during the evaluation: judging against it")
            evaluation = evaluate(challenger, current, s, frame=evaluation.frame)
        if current == challenger:
            decision = Decision(
                False, ALREADY, (f"version {challenger} is already the champion",), {}, None, {}, {}
            )
        else:
            decision = decide(evaluation.labels, evaluation.challenger, evaluation.champion, policy)
        report = _report(s.model_name, evaluation, decision, policy, current, lock)
        report["airflow_run_id"] = airflow_run_id
        if decision.promote:
            # The single point of commit.
            registry.move_alias(client, s.model_name, registry.CHAMPION, challenger)
            if current is not None:
                registry.move_alias(client, s.model_name, registry.PREVIOUS_CHAMPION, current)
        after = challenger if decision.promote else current
        if decision.outcome != ALREADY:  # a rerun keeps the record of the decision that promoted it
            _record(client, s, evaluation, decision, report, current, after)
    logger.info(f"{s.model_name} version {challenger}: {decision.outcome} ({decision.reason})")
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


def _record(
    client: Any,
    s: Settings,
    evaluation: Evaluation,
    decision: Decision,
    report: dict,
    before: int | None,
    after: int | None,
) -> None:
    """Tags on the challenger version and the registered model, and the report in the challenger's run."""
    version = evaluation.challenger.version
    assert version is not None
    at = report["decided_at"]
    tags: dict[str, Any] = {
        "decision": decision.outcome,
        "decision_reason": decision.reason,
        "decided_at": at,
        "compared_with": before if before is not None else "none",
        "evaluation_rows": evaluation.rows,
    }
    for prefix, metrics in (
        ("challenger", decision.challenger_metrics),
        ("champion", decision.champion_metrics),
    ):
        for key, value in (metrics or {}).items():
            tags[f"{prefix}_{key}"] = f"{value:.6f}"
    if "delta_pr_auc" in decision.comparison:
        tags["delta_pr_auc"] = f"{decision.comparison['delta_pr_auc']:+.6f}"
    boot = decision.comparison.get("bootstrap")
    if boot:
        tags["delta_pr_auc_interval"] = json.dumps([round(v, 6) for v in boot["delta_pr_auc_interval"]])
    registry.set_version_tags(client, s.model_name, version, tags)
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
    client.set_registered_model_tag(s.model_name, "last_decision", registry.cut(json.dumps(summary)))
    if decision.promote:
        client.set_registered_model_tag(s.model_name, "last_promotion", registry.cut(json.dumps(summary)))
    mv = client.get_model_version(s.model_name, str(version))
    if mv.run_id:
        stamp = at.replace(":", "").replace("+", "Z")
        client.log_dict(mv.run_id, report, f"promotion/evaluation-{stamp}.json")


def rollback(version: int, reason: str, settings: Settings | None = None) -> dict:
    """Point ``champion`` at ``version`` again (an operator's decision), recording the reason.

    Runs under the promotion lock. ``previous_champion`` keeps the version it replaced. The target
    version gets the tags ``decision=rollback``, ``rollback_reason`` and ``rolled_back_at``; the
    replaced one ``demoted_by_rollback``; the registered model ``last_decision``.
    """
    from mlflow.exceptions import MlflowException

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    if not reason or not reason.strip():
        raise PromotionError("a rollback needs a reason (it is recorded on the model)")
    try:
        client.get_model_version(s.model_name, str(version))
    except MlflowException:
        raise PromotionError(
            f"{s.model_name} has no version {version}: cannot roll back to it "
            f"(see the registry for the versions that exist)"
        ) from None
    with promotion_lock(s) as lock:
        current = registry.champion_version(s)
        at = registry.now()
        if current == version:
            outcome = ALREADY
        else:
            # The single point of commit.
            registry.move_alias(client, s.model_name, registry.CHAMPION, version)
            if current is not None:
                registry.move_alias(client, s.model_name, registry.PREVIOUS_CHAMPION, current)
            outcome = "rolled_back"
        registry.set_version_tags(
            client,
            s.model_name,
            version,
            {
                "decision": "rollback",
                "rollback_reason": reason,
                "rolled_back_at": at,
                "rolled_back_from": current,
            },
        )
        if current is not None and current != version:
            registry.set_version_tags(
                client,
                s.model_name,
                current,
                {"demoted_by_rollback": f"to version {version} at {at}: {reason}"},
            )
        summary = {
            "action": "rollback",
            "version": version,
            "outcome": outcome,
            "champion_before": current,
            "champion_after": version,
            "reason": reason[:1000],
            "at": at,
            "lock": lock,
        }
        client.set_registered_model_tag(s.model_name, "last_decision", registry.cut(json.dumps(summary)))
    logger.info(f"{s.model_name}: champion {current} -> {version} ({outcome}): {reason}")
    return {
        "model": s.model_name,
        "champion_before": current,
        "champion_after": version,
        "outcome": outcome,
        "reason": reason,
    }
