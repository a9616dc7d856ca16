"""The promotion gate on one evaluation: the overall rules, then per-slice non-regression and the
fairness audit, as one :class:`~.policy.Decision`.

:func:`judge` applies, in order:

1. the overall rules of :func:`~.policy.decide` (sanity checks, floors, the comparison with its
   paired bootstrap);
2. the slices (:mod:`.slices`): a judged slice where the challenger regresses beyond the slice
   margin, and not by chance, keeps the champion;
3. the fairness audit at each model's operating point (:mod:`.fairness`): a disparity above the
   bound rejects the challenger; one grown beyond the margin over the champion's keeps the
   champion.

The verdict lists every reason. A challenger that passes says so with its counts (slices judged,
disparities), so the record shows what was checked, not only what failed. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.promotion.fairness import (
    GROUP_COLUMN,
    audit,
    card_regions,
    disparity,
    fairness_objections,
)
from include.mlops.promotion.policy import KEPT, PROMOTED, REJECTED, Decision, decide, sanity_checks
from include.mlops.promotion.slices import (
    SLICE_FAIL,
    SLICE_PASS,
    SLICE_TOO_SMALL,
    describe_failure,
    judge_slices,
    slice_masks,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.core.policies import PromotionPolicy
    from include.mlops.promotion.policy import ModelScores
    from include.mlops.promotion.slices import Slice


@dataclass(frozen=True)
class Subgroups:
    """The evaluation rows cut into slices and card-holder regions."""

    slices: list[Slice]
    unavailable: list[str]
    """Slice dimensions the rows lack a column for."""
    regions: np.ndarray | None
    """Each row's card-holder region; ``None`` when the rows carry no ``card_country``."""


def subgroups(frame: pd.DataFrame) -> Subgroups:
    """The slices and regions of the evaluation rows ``frame``."""
    slices, unavailable = slice_masks(frame)
    return Subgroups(slices, unavailable, card_regions(frame))


def _threshold(model: ModelScores, y: np.ndarray) -> tuple[float | None, str]:
    """A model's operating threshold and where it comes from: its version's tag, else these rows."""
    from include.mlops.training.evaluation import operating_threshold

    if model.threshold is not None:
        return model.threshold, "version tag"
    return operating_threshold(y, model.scores), "computed on the evaluation rows"


def _audit(model: ModelScores | None, y: np.ndarray, groups: Subgroups, policy: PromotionPolicy) -> Any:
    """A model's fairness audit, with where its threshold came from (``None``: cannot be audited)."""
    if model is None or groups.regions is None:
        return None
    threshold, source = _threshold(model, y)
    if threshold is None:
        return None
    return {**audit(y, model.scores, threshold, groups.regions, policy), "threshold_source": source}


def _comparable(y: np.ndarray, champion: ModelScores | None) -> ModelScores | None:
    """The champion when its scores can be compared on these rows (its sanity checks pass)."""
    if champion is None or sanity_checks(y, champion)["failures"]:
        return None
    return champion


def _fairness_record(
    mine: Any, theirs: Any, objections: list[str], policy: PromotionPolicy
) -> dict[str, Any]:
    """What the decision records of the audit: both models' audits, the bounds and the verdict."""
    return {
        "audited": mine is not None,
        "skipped": None if mine is not None else f"the evaluation rows carry no {GROUP_COLUMN}",
        registry.CHALLENGER: mine,
        registry.CHAMPION: theirs,
        "max_disparity": policy.fairness_max_disparity,
        "margin": policy.fairness_margin,
        "objections": objections,
    }


def _passing_note(records: list[dict[str, Any]], compared: bool, mine: Any, policy: PromotionPolicy) -> str:
    """What a passing challenger was checked on, in one line."""
    judged = sum(r["status"] in (SLICE_PASS, SLICE_FAIL) for r in records)
    small = sum(r["status"] == SLICE_TOO_SMALL for r in records)
    note = (
        f"{judged} slices judged, none regresses beyond {policy.slice_margin} ({small} too small to judge)"
        if compared
        else f"{len(records)} slices reported, none compared (no champion)"
    )
    value = disparity(mine)
    if value is not None:
        note += f"; fairness disparity {value:.2f} within {policy.fairness_max_disparity}"
    return note


def judge(
    y: np.ndarray,
    challenger: ModelScores,
    champion: ModelScores | None,
    policy: PromotionPolicy,
    groups: Subgroups | None = None,
) -> Decision:
    """The gate's decision on two models' scores of the same rows (see the module docstring).

    Without ``groups`` (or when the challenger's scores are unusable) it is :func:`~.policy.decide`.
    """
    import numpy as np

    y = np.asarray(y).astype(int)
    base = decide(y, challenger, champion, policy)
    if groups is None or sanity_checks(y, challenger)["failures"]:
        return base
    rival = _comparable(y, champion)
    records = judge_slices(y, challenger.scores, rival.scores if rival else None, groups.slices, policy)
    mine, theirs = _audit(challenger, y, groups, policy), _audit(rival, y, groups, policy)
    rejections, comparisons = fairness_objections(mine, theirs, policy)
    failing = [describe_failure(r, policy) for r in records if r["status"] == SLICE_FAIL]
    if base.outcome == REJECTED or rejections:
        outcome, reasons = REJECTED, (*rejections, *(() if base.promote else base.reasons))
    elif failing or comparisons or not base.promote:
        outcome = KEPT
        reasons = (*(() if base.promote else base.reasons), *failing, *comparisons)
    else:
        outcome, reasons = PROMOTED, (*base.reasons, _passing_note(records, rival is not None, mine, policy))
    return replace(
        base,
        promote=outcome == PROMOTED,
        outcome=outcome,
        reasons=tuple(reasons),
        slices=tuple(records),
        fairness=_fairness_record(mine, theirs, [*rejections, *comparisons], policy),
    )
