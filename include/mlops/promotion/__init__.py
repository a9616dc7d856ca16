"""Promotion: the challenger against the champion on the same days; the alias moves only if it wins.

* :mod:`.policy`: the overall rules (:func:`decide`: sanity checks and floors, the comparison with
  a paired bootstrap, the verdict), unit-tested;
* :mod:`.slices`: per-slice non-regression (channel, card present, merchant category, card
  holder's country, amount band, new or established customer), each judged slice with its own
  paired bootstrap;
* :mod:`.fairness`: false-positive rate and recall per card-holder region at the operating
  point, and the disparity bound;
* :mod:`.gate`: :func:`judge`, the three together as one :class:`Decision`;
* :mod:`.evaluation`: both models scored on the rows training judged on (:func:`evaluate`);
* :mod:`.artifacts`: the plots and tables logged on the challenger's MLflow run;
* :mod:`.records`: what a decision writes in MLflow, in an order a retry completes, and the
  model's lock (:func:`promotion_lock`);
* :mod:`.promote`: :func:`evaluate_and_promote_run`, the decision first (pending), then the alias
  moves, then the records, so that a retry after a failure anywhere completes the same decision;
* :mod:`.approval`: with ``MLOPS_PROMOTION_APPROVAL=required``, a reviewer's answer
  (:func:`conclude_review`) before the alias moves;
* :mod:`.rollback`: :func:`rollback`; a version the gate or a reviewer rejected needs ``force``.

The knobs are :class:`~include.mlops.core.policies.PromotionPolicy`.
"""

from include.mlops.promotion.approval import (
    APPROVE,
    COMMENT,
    REJECT,
    Review,
    conclude_review,
    review_body,
    review_of,
)
from include.mlops.promotion.artifacts import (
    CURVE_POINTS,
    EVALUATION_FOLDER,
    bootstrap_figure,
    calibration_figure,
    curve_figures,
    decision_markdown,
    fairness_table,
    log_gate_artifacts,
    slices_table,
)
from include.mlops.promotion.bootstrap import paired_bootstrap
from include.mlops.promotion.evaluation import (
    Evaluation,
    PromotionError,
    challenger_run,
    evaluate,
    run_of,
    version_for_run,
)
from include.mlops.promotion.fairness import (
    CAPPED_DISPARITY,
    GROUP_COLUMN,
    REGIONS,
    audit,
    card_regions,
    disparity,
    fairness_objections,
    fairness_summary,
)
from include.mlops.promotion.gate import Subgroups, judge, subgroups
from include.mlops.promotion.policy import (
    ALREADY,
    AWAITING_APPROVAL,
    KEPT,
    MAX_CALIBRATION_RATIO,
    PROMOTED,
    REJECTED,
    REJECTED_IN_REVIEW,
    Decision,
    ModelScores,
    already_champion,
    decide,
    sanity_checks,
)
from include.mlops.promotion.promote import evaluate_and_promote_run
from include.mlops.promotion.records import (
    GATE_TAG,
    PENDING,
    RECORDED,
    REFUSED,
    ROLLBACK,
    STATUS_TAG,
    VERDICTS,
    Intent,
    commit_and_record,
    decision_summary,
    decision_tags,
    intent_of,
    move_champion,
    promotion_lock,
    read_intent,
    read_report,
    report_artifact,
    version_or_none,
)
from include.mlops.promotion.rollback import ROLLED_BACK, rollback
from include.mlops.promotion.slices import (
    AMOUNT_BANDS,
    DIMENSIONS,
    SLICE_FAIL,
    SLICE_NOT_COMPARED,
    SLICE_PASS,
    SLICE_TOO_SMALL,
    TENURE_FEATURE,
    Slice,
    describe_failure,
    judge_slice,
    judge_slices,
    slice_masks,
    slices_summary,
)

__all__ = [
    "ALREADY",
    "AMOUNT_BANDS",
    "APPROVE",
    "AWAITING_APPROVAL",
    "CAPPED_DISPARITY",
    "COMMENT",
    "CURVE_POINTS",
    "DIMENSIONS",
    "EVALUATION_FOLDER",
    "GATE_TAG",
    "GROUP_COLUMN",
    "KEPT",
    "MAX_CALIBRATION_RATIO",
    "PENDING",
    "PROMOTED",
    "RECORDED",
    "REFUSED",
    "REGIONS",
    "REJECT",
    "REJECTED",
    "REJECTED_IN_REVIEW",
    "ROLLBACK",
    "ROLLED_BACK",
    "SLICE_FAIL",
    "SLICE_NOT_COMPARED",
    "SLICE_PASS",
    "SLICE_TOO_SMALL",
    "STATUS_TAG",
    "TENURE_FEATURE",
    "VERDICTS",
    "Decision",
    "Evaluation",
    "Intent",
    "ModelScores",
    "PromotionError",
    "Review",
    "Slice",
    "Subgroups",
    "already_champion",
    "audit",
    "bootstrap_figure",
    "calibration_figure",
    "card_regions",
    "challenger_run",
    "commit_and_record",
    "conclude_review",
    "curve_figures",
    "decide",
    "decision_markdown",
    "decision_summary",
    "decision_tags",
    "describe_failure",
    "disparity",
    "evaluate",
    "evaluate_and_promote_run",
    "fairness_objections",
    "fairness_summary",
    "fairness_table",
    "intent_of",
    "judge",
    "judge_slice",
    "judge_slices",
    "log_gate_artifacts",
    "move_champion",
    "paired_bootstrap",
    "promotion_lock",
    "read_intent",
    "read_report",
    "report_artifact",
    "review_body",
    "review_of",
    "rollback",
    "run_of",
    "sanity_checks",
    "slice_masks",
    "slices_summary",
    "slices_table",
    "subgroups",
    "version_for_run",
    "version_or_none",
]
