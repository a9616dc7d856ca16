"""Promotion: the challenger against the champion on the same days; the alias moves only if it wins.

* :mod:`.policy`: the pure rules (:func:`decide`, the paired bootstrap), unit-tested;
* :mod:`.evaluate`: both models scored on the rows training judged on;
* :mod:`.promote`: :func:`evaluate_and_promote_run` and :func:`rollback`, under the model's lock.
"""

from include.mlops.promotion.evaluate import (
    Evaluation,
    PromotionError,
    evaluate,
    version_for_run,
)
from include.mlops.promotion.policy import (
    ALREADY,
    DEFAULT_BOOTSTRAP,
    DEFAULT_BOOTSTRAP_ROWS,
    DEFAULT_CONFIDENCE,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MARGIN,
    DEFAULT_MIN_PR_AUC,
    DEFAULT_MIN_RECALL,
    KEPT,
    MAX_CALIBRATION_RATIO,
    PROMOTED,
    REJECTED,
    Decision,
    ModelScores,
    Policy,
    decide,
    paired_bootstrap,
    sanity_checks,
)
from include.mlops.promotion.promote import (
    evaluate_and_promote_run,
    promotion_lock,
    rollback,
)

__all__ = [
    "ALREADY",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_BOOTSTRAP_ROWS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_MARGIN",
    "DEFAULT_MIN_PR_AUC",
    "DEFAULT_MIN_RECALL",
    "KEPT",
    "MAX_CALIBRATION_RATIO",
    "PROMOTED",
    "REJECTED",
    "Decision",
    "Evaluation",
    "ModelScores",
    "Policy",
    "PromotionError",
    "decide",
    "evaluate",
    "evaluate_and_promote_run",
    "paired_bootstrap",
    "promotion_lock",
    "rollback",
    "sanity_checks",
    "version_for_run",
]
