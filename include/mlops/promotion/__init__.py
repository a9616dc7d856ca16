"""Promotion: the challenger against the champion on the same days; the alias moves only if it wins.

* :mod:`.policy`: the pure rules (:func:`decide`: sanity checks and floors, the comparison with
  a paired bootstrap, the verdict), unit-tested;
* :mod:`.evaluation`: both models scored on the rows training judged on (:func:`evaluate`);
* :mod:`.promote`: :func:`evaluate_and_promote_run` and :func:`rollback`, under the model's lock
  (:func:`promotion_lock`), and what they record in MLflow: the decision first (pending), then the
  alias moves, then the records, so that a retry after a failure anywhere completes the same
  decision. A rollback to a version the gate rejected needs ``force``.

The knobs are :class:`~include.mlops.core.policies.PromotionPolicy`.
"""

from include.mlops.promotion.evaluation import (
    Evaluation,
    PromotionError,
    evaluate,
    version_for_run,
)
from include.mlops.promotion.policy import (
    ALREADY,
    KEPT,
    MAX_CALIBRATION_RATIO,
    PROMOTED,
    REJECTED,
    Decision,
    ModelScores,
    already_champion,
    decide,
    paired_bootstrap,
    sanity_checks,
)
from include.mlops.promotion.promote import (
    ROLLED_BACK,
    evaluate_and_promote_run,
    promotion_lock,
    rollback,
)

__all__ = [
    "ALREADY",
    "KEPT",
    "MAX_CALIBRATION_RATIO",
    "PROMOTED",
    "REJECTED",
    "ROLLED_BACK",
    "Decision",
    "Evaluation",
    "ModelScores",
    "PromotionError",
    "already_champion",
    "decide",
    "evaluate",
    "evaluate_and_promote_run",
    "paired_bootstrap",
    "promotion_lock",
    "rollback",
    "sanity_checks",
    "version_for_run",
]
