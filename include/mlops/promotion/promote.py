"""Judge the challenger against the champion on the same out-of-time days; move ``champion`` only if it wins.

Flow of :func:`evaluate_and_promote_run` (the ``evaluate_and_promote`` task of ``train_model``):

1. find the version registered by that Airflow run (version tag ``airflow_run_id``,
   :func:`~.evaluation.version_for_run`);
2. rebuild the OOT days recorded on it (tags ``oot_start`` / ``oot_end``) exactly as training saw
   them and score them with the challenger and the current champion (:func:`~.evaluation.evaluate`);
3. under the model's lock: re-read the champion (scoring it too if another run moved it
   meanwhile) and apply the policy (:func:`~.policy.decide`);
4. commit and record, in this order: the decision on the challenger version (``decision``,
   ``decision_reason``, ``compared_with``: the champion it replaces, both models' metrics) with
   ``decision_status=pending``; when promoted, ``previous_champion`` to the replaced version, then
   ``champion`` to the challenger (the single point of commit); the tag ``last_decision`` on the
   registered model (and ``last_promotion`` when promoted); the evaluation report
   ``promotion/evaluation-<decided_at>.json`` in the challenger's run; ``decision_status=recorded``.

Every step is idempotent and a retry converges: a retry after a failure at any MLflow call of
step 4 ends with the same aliases and records as an uninterrupted run. Before the commit it decides
again against the same champion, reusing the pending decision's ``decided_at``; after it (the
challenger is champion, its decision still ``pending``) it judges against the recorded
``compared_with`` and replays the sequence instead of answering "already champion". A rerun of a
fully recorded promotion changes nothing.

:func:`rollback` is an operator's move of the alias, under the same lock, committed and recorded
the same way (``decision=rollback``, ``rolled_back_from``); a version the gate rejected needs
``force``. The knobs are :class:`~include.mlops.core.policies.PromotionPolicy`, built once per call;
the lock is :func:`include.mlops.registry.model_lock`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.evaluation import Evaluation, PromotionError, evaluate, version_for_run
from include.mlops.promotion.policy import (
    ALREADY,
    KEPT,
    PROMOTED,
    REJECTED,
    Decision,
    already_champion,
    decide,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

ROLLED_BACK = "rolled_back"
"""Outcome of a :func:`rollback` that moved the alias (to the champion itself: :data:`~.policy.ALREADY`)."""

_ROLLBACK = "rollback"  # the ``decision`` tag of a version an operator rolled back to
_STATUS, _PENDING, _RECORDED = "decision_status", "pending", "recorded"
_GATE = "gate_decision"  # the gate's verdict, kept when a rollback overwrites ``decision``
_VERDICTS = (PROMOTED, KEPT, REJECTED)


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
    """``previous_champion`` to the version replaced, then ``champion`` to ``version``: the commit."""
    if current is not None and current != version:
        registry.move_alias(client, name, registry.PREVIOUS_CHAMPION, current)
    registry.move_alias(client, name, registry.CHAMPION, version)


def _version_or_none(text: str | None) -> int | None:
    """A version number recorded as a tag (``none`` / ``None`` / absent: no version)."""
    return int(text) if text and text.isdigit() else None


@dataclass(frozen=True)
class _Intent:
    """What a version's tags record about the last decision on it, and whether it was finished."""

    decision: str | None
    pending: bool
    replaced: int | None
    at: str | None
    reason: str
    gate: str | None

    def unfinished(self, decisions: tuple[str, ...], replaced: int | None) -> bool:
        """Whether this is an unfinished decision of ``decisions`` that replaces ``replaced``."""
        return self.pending and self.decision in decisions and self.replaced == replaced and bool(self.at)


def _intent_of(tags: dict[str, str]) -> _Intent:
    """The decision recorded by a version's tags: a gate verdict or a rollback."""
    decision = tags.get("decision")
    rolled = decision == _ROLLBACK
    return _Intent(
        decision=decision,
        pending=tags.get(_STATUS) == _PENDING,
        replaced=_version_or_none(tags.get("rolled_back_from" if rolled else "compared_with")),
        at=tags.get("rolled_back_at" if rolled else "decided_at"),
        reason=tags.get("rollback_reason" if rolled else "decision_reason", ""),
        gate=tags.get(_GATE) if rolled else decision if decision in _VERDICTS else None,
    )


def _intent(client: Any, name: str, version: int) -> _Intent:
    """The decision recorded on ``version``, read from the registry."""
    return _intent_of(client.get_model_version(name, str(version)).tags)


# --------------------------------------------------------------------------------------------------
# Promotion


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
    resumed: _Intent | None = None


def _plan(client: Any, name: str, challenger: int) -> _Plan:
    """The plan of a promotion of ``challenger``, resuming an unfinished one recorded on it."""
    current = registry.alias_version(client, name, registry.CHAMPION)
    intent = _intent(client, name, challenger)
    if current == challenger:
        if intent.pending and intent.decision == PROMOTED and intent.at:
            return _Plan(current, intent.replaced, intent.at, resumed=intent)
        return _Plan(current, current, registry.now(), already=True)
    at = intent.at if intent.unfinished(_VERDICTS, current) else None
    return _Plan(current, current, at or registry.now())


def evaluate_and_promote_run(airflow_run_id: str, settings: Settings | None = None) -> dict:
    """Judge the version registered by ``airflow_run_id`` against the champion; promote it if it wins.

    Returns ``{"model", "challenger_version", "champion_before", "champion_after", "outcome",
    "promoted", "reason", "challenger_metrics", "champion_metrics"}``. Safe to retry after a failure
    at any step: the decision is committed and recorded as an uninterrupted run would have (an
    unfinished promotion is completed from its record). A rerun of a promotion recorded in full
    reports :data:`~.policy.ALREADY` and changes nothing.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    policy = PromotionPolicy.from_env(seed=s.seed)
    challenger = version_for_run(airflow_run_id, s)
    seen = _plan(client, s.model_name, challenger)
    logger.info("%s: judging version %s against champion %s", s.model_name, challenger, seen.opponent)
    evaluation = None if seen.already else evaluate(challenger, seen.opponent, s)

    with promotion_lock(s, policy.lock_timeout) as lock:
        plan = _plan(client, s.model_name, challenger)
        if plan.already:
            decision, before, after = already_champion(challenger), plan.champion, plan.champion
        else:
            if evaluation is None or plan.opponent != seen.opponent:
                logger.info(
                    "the champion moved to %s during the evaluation: judging against it", plan.opponent
                )
                evaluation = evaluate(
                    challenger, plan.opponent, s, frame=evaluation.frame if evaluation else None
                )
            decision = _decide(evaluation, plan, policy)
            before, after = plan.opponent, challenger if decision.promote else plan.opponent
            report = _report(
                s.model_name, evaluation, decision, policy, before, lock, airflow_run_id, plan.at
            )
            _commit_and_record(client, s.model_name, evaluation, decision, report)

    logger.info("%s version %s: %s (%s)", s.model_name, challenger, decision.outcome, decision.reason)
    return {
        "model": s.model_name,
        "challenger_version": challenger,
        "champion_before": before,
        "champion_after": after,
        "outcome": decision.outcome,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_metrics": decision.challenger_metrics,
        "champion_metrics": decision.champion_metrics,
    }


def _decide(evaluation: Evaluation, plan: _Plan, policy: PromotionPolicy) -> Decision:
    """The policy's decision; a promotion already committed stays one (its record is completed)."""
    decision = decide(evaluation.labels, evaluation.challenger, evaluation.champion, policy)
    if plan.resumed is not None and not decision.promote:
        logger.warning(
            "version %s was promoted (%s) but the policy now says %s: completing the promotion's record",
            evaluation.challenger.version,
            plan.resumed.reason,
            decision.outcome,
        )
        reasons = (plan.resumed.reason,) if plan.resumed.reason else decision.reasons
        decision = dataclasses.replace(decision, promote=True, outcome=PROMOTED, reasons=reasons)
    return decision


def _report(
    name: str,
    evaluation: Evaluation,
    decision: Decision,
    policy: PromotionPolicy,
    before: int | None,
    lock: str,
    airflow_run_id: str,
    at: str,
) -> dict[str, Any]:
    """The evaluation report logged in the challenger's run: data, policy, lock and decision."""
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
        "airflow_run_id": airflow_run_id,
    }


def _decision_tags(evaluation: Evaluation, decision: Decision, at: str, before: int | None) -> dict[str, Any]:
    """The tags of the challenger version: the outcome (pending), its reason and both models' metrics."""
    tags: dict[str, Any] = {
        "decision": decision.outcome,
        _STATUS: _PENDING,
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


def _commit_and_record(
    client: Any, name: str, evaluation: Evaluation, decision: Decision, report: dict[str, Any]
) -> None:
    """The decision on the challenger (pending), the alias moves when promoted, the model's tags and
    the report, then the decision marked recorded; every step can be replayed with the same values."""
    version = evaluation.challenger.version
    assert version is not None
    at, before = report["decided_at"], report["champion_version_before"]
    registry.set_version_tags(client, name, version, _decision_tags(evaluation, decision, at, before))
    after = before
    if decision.promote:
        _move_champion(client, name, version, before)
        after = version
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
    registry.set_version_tags(client, name, version, {_STATUS: _RECORDED})


# --------------------------------------------------------------------------------------------------
# Rollback


@dataclass(frozen=True)
class _Rollback:
    """One rollback as recorded: the target, the champion it replaced, why, and the gate it overrides."""

    version: int
    before: int | None
    reason: str
    at: str
    lock: str
    gate: str | None
    forced: bool


def rollback(version: int, reason: str, settings: Settings | None = None, *, force: bool = False) -> dict:
    """Point ``champion`` at ``version`` again (an operator's decision), recording the reason.

    Runs under the model's lock. A version the gate rejected (``decision=rejected``) is refused
    unless ``force`` is true. ``previous_champion`` keeps the version replaced. The target version
    gets ``decision=rollback``, ``rollback_reason``, ``rolled_back_at``, ``rolled_back_from``,
    ``rollback_forced`` (and ``gate_decision``, the gate's verdict); the replaced one
    ``demoted_by_rollback``; the registered model ``last_decision``. Safe to retry: an unfinished
    rollback is completed as first recorded (its ``rolled_back_from``, reason and time); one to
    the champion whose record is complete changes nothing (:data:`~.policy.ALREADY`). Returns
    ``{"model", "champion_before", "champion_after", "outcome", "reason"}``.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    _check_rollback(client, s.model_name, version, reason, force)
    policy = PromotionPolicy.from_env(seed=s.seed)
    with promotion_lock(s, policy.lock_timeout) as lock:
        current = registry.alias_version(client, s.model_name, registry.CHAMPION)
        move = _rollback_move(version, reason, force, current, _intent(client, s.model_name, version), lock)
        if move is not None:
            _commit_rollback(client, s.model_name, move)
    before, outcome = (move.before, ROLLED_BACK) if move else (current, ALREADY)
    reason = move.reason if move else reason
    logger.info("%s: champion %s -> %s (%s): %s", s.model_name, before, version, outcome, reason)
    return {
        "model": s.model_name,
        "champion_before": before,
        "champion_after": version,
        "outcome": outcome,
        "reason": reason,
    }


def _check_rollback(client: Any, name: str, version: int, reason: str, force: bool) -> None:
    """Raise :class:`PromotionError` without a reason, when ``version`` does not exist, or when the
    gate rejected it and ``force`` is not given."""
    from mlflow.exceptions import MlflowException

    if not reason or not reason.strip():
        raise PromotionError("a rollback needs a reason (it is recorded on the model)")
    try:
        found = client.get_model_version(name, str(version))
    except MlflowException:
        raise PromotionError(
            f"{name} has no version {version}: cannot roll back to it "
            f"(see the registry for the versions that exist)"
        ) from None
    if _intent_of(found.tags).gate == REJECTED and not force:
        raise PromotionError(
            f"version {version} of {name} was rejected by the promotion gate "
            f"({found.tags.get('decision_reason', 'no reason recorded')[:300]}): serving it needs an "
            "explicit force (rollback(..., force=True), `--force`, the `force_rollback` param) and a reason"
        )


def _rollback_move(
    version: int, reason: str, force: bool, current: int | None, intent: _Intent, lock: str
) -> _Rollback | None:
    """The rollback to commit: an unfinished one recorded on ``version`` resumed as recorded, a new
    one, or ``None`` when ``version`` is the champion with its record complete."""
    if current == version:
        if intent.pending and intent.decision == _ROLLBACK and intent.at:
            return _Rollback(
                version, intent.replaced, intent.reason or reason, intent.at, lock, intent.gate, force
            )
        return None
    at = intent.at if intent.unfinished((_ROLLBACK,), current) else None
    return _Rollback(version, current, reason, at or registry.now(), lock, intent.gate, force)


def _commit_rollback(client: Any, name: str, move: _Rollback) -> None:
    """The rollback on the target (pending), the alias moves, the demoted version's and the model's
    tags, then the rollback marked recorded; every step can be replayed with the same values."""
    gate = {_GATE: move.gate} if move.gate else {}
    intent = {
        **gate,
        "decision": _ROLLBACK,
        _STATUS: _PENDING,
        "rollback_reason": move.reason,
        "rolled_back_at": move.at,
        "rolled_back_from": move.before,
        "rollback_forced": move.forced,
    }
    registry.set_version_tags(client, name, move.version, intent)
    _move_champion(client, name, move.version, move.before)
    if move.before is not None and move.before != move.version:
        demoted = f"to version {move.version} at {move.at}: {move.reason}"
        registry.set_version_tags(client, name, move.before, {"demoted_by_rollback": demoted})
    summary = {
        "action": "rollback",
        "version": move.version,
        "outcome": ROLLED_BACK,
        "champion_before": move.before,
        "champion_after": move.version,
        "reason": move.reason[:1000],
        "forced": move.forced,
        "at": move.at,
        "lock": move.lock,
    }
    client.set_registered_model_tag(name, "last_decision", registry.cut(json.dumps(summary)))
    registry.set_version_tags(client, name, move.version, {_STATUS: _RECORDED})
