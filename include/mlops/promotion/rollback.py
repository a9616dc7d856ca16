"""Rollback: an operator points ``champion`` back at an earlier version, recording why.

:func:`rollback` runs under the model's lock and is committed and recorded like a promotion
(:mod:`.records`): the intent on the target version (``decision=rollback``, pending), the alias
moves, the replaced version's and the model's tags, then ``recorded``. A version the gate or a
reviewer refused (``decision`` ``rejected`` or ``rejected_in_review``) needs ``force``; the
refusal stays in ``gate_decision``, so the next rollback to it needs force again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.evaluation import PromotionError
from include.mlops.promotion.policy import ALREADY, REJECTED_IN_REVIEW
from include.mlops.promotion.records import (
    GATE_TAG,
    PENDING,
    RECORDED,
    REFUSED,
    ROLLBACK,
    STATUS_TAG,
    Intent,
    intent_of,
    move_champion,
    promotion_lock,
    read_intent,
)

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

ROLLED_BACK = "rolled_back"
"""Outcome of a :func:`rollback` that moved the alias (to the champion itself: :data:`~.policy.ALREADY`)."""


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
        move = _rollback_move(
            version, reason, force, current, read_intent(client, s.model_name, version), lock
        )
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
    gate or its reviewer rejected it and ``force`` is not given."""
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
    gate = intent_of(found.tags).gate
    if gate in REFUSED and not force:
        how = " (its reviewer refused it)" if gate == REJECTED_IN_REVIEW else ""
        raise PromotionError(
            f"version {version} of {name} was rejected by the promotion gate{how} "
            f"({found.tags.get('decision_reason', 'no reason recorded')[:300]}): serving it needs an "
            "explicit force (rollback(..., force=True), `--force`, the `force_rollback` param) and a reason"
        )


def _rollback_move(
    version: int, reason: str, force: bool, current: int | None, intent: Intent, lock: str
) -> _Rollback | None:
    """The rollback to commit: an unfinished one recorded on ``version`` resumed as recorded, a new
    one, or ``None`` when ``version`` is the champion with its record complete."""
    if current == version:
        if intent.pending and intent.decision == ROLLBACK and intent.at:
            return _Rollback(
                version, intent.replaced, intent.reason or reason, intent.at, lock, intent.gate, force
            )
        return None
    at = intent.at if intent.unfinished((ROLLBACK,), current) else None
    return _Rollback(version, current, reason, at or registry.now(), lock, intent.gate, force)


def _commit_rollback(client: Any, name: str, move: _Rollback) -> None:
    """The rollback on the target (pending), the alias moves, the demoted version's and the model's
    tags, then the rollback marked recorded; every step can be replayed with the same values."""
    gate = {GATE_TAG: move.gate} if move.gate else {}
    intent = {
        **gate,
        "decision": ROLLBACK,
        STATUS_TAG: PENDING,
        "rollback_reason": move.reason,
        "rolled_back_at": move.at,
        "rolled_back_from": move.before,
        "rollback_forced": move.forced,
    }
    registry.set_version_tags(client, name, move.version, intent)
    move_champion(client, name, move.version, move.before)
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
    registry.set_version_tags(client, name, move.version, {STATUS_TAG: RECORDED})
