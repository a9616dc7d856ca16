"""The promotion policy: pure rules (no I/O, no MLflow), unit-tested.

The rules
=========
:func:`decide` runs three steps.

1. **Sanity checks and floors.** The challenger is **rejected** when a sanity check fails
   (:func:`sanity_checks`): a score is NaN or infinite, or outside [0, 1]; the scores are
   constant; their mean is more than :data:`MAX_CALIBRATION_RATIO` times away from the observed
   fraud rate; or its signature needs a feature column that the feature service does not serve
   (the served columns must be the same as, or a superset of, the model's inputs). It is also
   rejected below the absolute floors (PR-AUC, recall at 1 % FPR), except a floor that the
   champion misses too on the same days (the world moved under both): then the comparison
   decides, and the decision says so.
2. **Comparison.** With no champion, a challenger that passes is **promoted**. Otherwise both are
   scored on the same rows and a paired bootstrap (:func:`paired_bootstrap`: the same resampled
   rows for both models) gives intervals for the differences in PR-AUC and in recall at 1 % FPR.
   A champion that fails its own sanity checks cannot be compared: it is **kept**, and an operator
   replaces it by hand.
3. **Verdict.** The challenger is **promoted** only when

   * its PR-AUC beats the champion's by at least the margin, and
   * the lower bound of the PR-AUC difference's interval is above 0 (the gain is not noise), and
   * the upper bound of the recall difference's interval is at least 0 (recall is not
     significantly worse);

   otherwise the champion is **kept** (a difference within the margin is a tie: the champion stays).

Its knobs are :class:`~include.mlops.core.policies.PromotionPolicy`. numpy and scikit-learn are
imported inside the functions. The per-slice and fairness rules are :mod:`.slices` and
:mod:`.fairness`; :func:`~.gate.judge` applies all three.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from include.mlops.core.metrics import classification_metrics
from include.mlops.core.policies import PromotionPolicy
from include.mlops.promotion.bootstrap import paired_bootstrap

if TYPE_CHECKING:
    import numpy as np


MAX_CALIBRATION_RATIO = 10.0
"""The mean score may differ from the observed fraud rate by at most this factor either way."""

PROMOTED = "promoted"
"""Outcome: the challenger becomes the champion."""

KEPT = "kept_champion"
"""Outcome: the challenger is sound but does not clearly beat the champion, which stays."""

REJECTED = "rejected"
"""Outcome: the challenger fails a sanity check or a floor."""

ALREADY = "already_champion"
"""Outcome: the challenger is the champion already (a rerun); nothing is decided again."""

AWAITING_APPROVAL = "awaiting_approval"
"""Outcome: the gate would promote, and a reviewer must approve first (``MLOPS_PROMOTION_APPROVAL``)."""

REJECTED_IN_REVIEW = "rejected_in_review"
"""Outcome: the gate would have promoted; a reviewer rejected it, or the review timed out."""


@dataclass
class ModelScores:
    """One model's scores on the evaluation rows (``scores`` is ``None`` when it could not be scored)."""

    version: int | None
    scores: np.ndarray | None
    columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    error: str | None = None
    threshold: float | None = None
    """Its operating threshold as recorded on the version (``None``: not recorded)."""


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` concluded, and why."""

    promote: bool
    outcome: str
    reasons: tuple[str, ...]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    comparison: dict[str, Any]
    checks: dict[str, Any]
    slices: tuple[dict[str, Any], ...] = ()
    """Each slice's record (:func:`~.slices.judge_slice`); empty when the slices were not judged."""
    fairness: dict[str, Any] = field(default_factory=dict)
    """The fairness audit of both models (:func:`~.fairness.audit`) and its verdict."""
    evidence: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Bulky material behind the decision (the bootstrap's draws), for plots; never recorded as is."""

    @property
    def reason(self) -> str:
        """The reasons as one line."""
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """The decision as JSON-compatible values (without :attr:`evidence`)."""
        out = asdict(replace(self, evidence={}))
        del out["evidence"]
        return {**out, "reasons": list(self.reasons), "slices": list(self.slices), "reason": self.reason}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Decision:
        """The decision :meth:`as_dict` recorded (a report read back)."""
        names = {f.name for f in fields(cls)} - {"evidence"}
        values = {k: v for k, v in record.items() if k in names}
        values["reasons"] = tuple(values.get("reasons", ()))
        values["slices"] = tuple(values.get("slices", ()))
        return cls(**values)


def already_champion(version: int) -> Decision:
    """The decision for a version that already holds the champion alias (nothing to judge)."""
    return Decision(False, ALREADY, (f"version {version} is already the champion",), {}, None, {}, {})


# --------------------------------------------------------------------------------------------------
# Sanity checks


def sanity_checks(y: np.ndarray, model: ModelScores) -> dict[str, Any]:
    """The sanity checks of one model's scores: each check's result, and ``failures`` (a list of text)."""
    if model.missing_columns or model.error or model.scores is None:
        return _unscored_checks(model)
    checks: dict[str, Any] = {"signature_compatible": True}
    checks["failures"] = _score_failures(y, model.scores, checks)
    return checks


def _unscored_checks(model: ModelScores) -> dict[str, Any]:
    """The checks of a model that produced no scores: why not."""
    failures: list[str] = []
    if model.missing_columns:
        failures.append(
            f"its signature needs columns the feature service does not serve: {model.missing_columns}"
        )
    if model.error:
        failures.append(f"it could not be scored: {model.error}")
    elif model.scores is None:
        failures.append("it produced no scores")
    return {"signature_compatible": not model.missing_columns, "failures": failures}


def _score_failures(y: np.ndarray, scores: np.ndarray, checks: dict[str, Any]) -> list[str]:
    """What is wrong with ``scores`` for labels ``y``; the measured values go into ``checks``."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    non_finite = int((~np.isfinite(s)).sum())
    checks["non_finite_scores"] = non_finite
    failures: list[str] = []
    if len(s) != len(y):
        failures.append(f"{len(s)} scores for {len(y)} rows")
    if non_finite:
        failures.append(f"{non_finite} of {len(s)} scores are NaN or infinite")
    finite = s[np.isfinite(s)]
    if len(finite):
        failures += _distribution_failures(y, finite, checks)
    elif len(s):
        failures.append("no finite score at all")
    return failures


def _distribution_failures(y: np.ndarray, finite: np.ndarray, checks: dict[str, Any]) -> list[str]:
    """Range, spread and calibration of the finite scores."""
    import numpy as np

    low, high, mean = float(finite.min()), float(finite.max()), float(finite.mean())
    checks["score_min"], checks["score_max"], checks["score_mean"] = low, high, mean
    failures: list[str] = []
    if low < 0 or high > 1:
        failures.append(f"scores outside [0, 1] (from {low:.4g} to {high:.4g})")
    if np.ptp(finite) <= 1e-12:
        failures.append(f"constant scores ({finite[0]:.4g} for every row)")
    rate = float(np.mean(y)) if len(y) else 0.0
    if rate > 0 and low >= 0 and high <= 1:
        ratio = mean / rate
        checks["mean_score_to_fraud_rate"] = ratio
        if not 1 / MAX_CALIBRATION_RATIO <= ratio <= MAX_CALIBRATION_RATIO:
            failures.append(f"mean score {mean:.4g} is {ratio:.3g}x the observed fraud rate {rate:.4g}")
    return failures


# --------------------------------------------------------------------------------------------------
# The paired bootstrap


# --------------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class _Screening:
    """Step 1: the challenger's sanity checks, its metrics (once sane) and what rejects it."""

    checks: dict[str, Any]
    metrics: dict[str, float]
    failures: tuple[str, ...]
    floor_misses: tuple[str, ...] = ()
    """The metrics below their floor, one per floor failure, in the same order."""
    notes: tuple[str, ...] = ()
    """Floors waived because the champion misses them too (:func:`_waive_floors_the_champion_misses`)."""


@dataclass(frozen=True)
class _Comparison:
    """Step 2: the champion's metrics, the recorded comparison, and what keeps the champion."""

    champion_metrics: dict[str, float]
    details: dict[str, Any]
    objections: tuple[str, ...]
    draws: dict[str, Any] = field(default_factory=dict)


def decide(
    y: np.ndarray,
    challenger: ModelScores,
    champion: ModelScores | None,
    policy: PromotionPolicy | None = None,
) -> Decision:
    """Apply the promotion policy to two models' scores on the same labelled rows (pure function).

    ``champion`` is ``None`` when there is none (or it is the challenger itself). See the module
    docstring for the rules; the decision lists every reason that led to it.
    """
    import numpy as np

    policy = policy or PromotionPolicy()
    y = np.asarray(y).astype(int)
    screening = _screen(y, challenger, policy)
    champion_checks = sanity_checks(y, champion) if champion is not None else None
    if champion is not None and screening.floor_misses and not champion_checks["failures"]:
        screening = _waive_floors_the_champion_misses(y, champion, screening, policy)
    if screening.failures:
        return Decision(False, REJECTED, screening.failures, screening.metrics, None, {}, screening.checks)
    if champion is None:
        reason = "no champion yet; the challenger passes the sanity checks and the floors"
        return Decision(True, PROMOTED, (reason,), screening.metrics, None, {}, screening.checks)
    if champion_checks["failures"]:
        return _incomparable_champion(champion, champion_checks, screening)
    comparison = _compare(y, challenger, champion, screening.metrics, policy)
    decision = _verdict(champion, screening, comparison, policy)
    return replace(decision, reasons=(*decision.reasons, *screening.notes)) if screening.notes else decision


def _waive_floors_the_champion_misses(
    y: np.ndarray, champion: ModelScores, screening: _Screening, policy: PromotionPolicy
) -> _Screening:
    """Floors the champion misses on the same rows do not reject: the comparison decides.

    A floor keeps a weak model from replacing nothing, or a model that meets it. When the world
    has moved and the champion itself is below the floor on these days, refusing every challenger
    that is also below it would leave the worse model serving.
    """
    import numpy as np

    theirs = classification_metrics(y, np.asarray(champion.scores, dtype=np.float64))
    floors = {"pr_auc": policy.min_pr_auc, "recall_at_1pct_fpr": policy.min_recall_at_1pct_fpr}
    waived = {m for m in screening.floor_misses if not theirs[m] >= floors[m]}
    failures = tuple(
        f for m, f in zip(screening.floor_misses, screening.failures, strict=True) if m not in waived
    )
    notes = tuple(
        f"{m} {screening.metrics[m]:.4f} is below the floor {floors[m]}, as is the champion's "
        f"{theirs[m]:.4f} on these days: the comparison decides"
        for m in screening.floor_misses
        if m in waived
    )
    return replace(screening, failures=failures, notes=notes)


def _screen(y: np.ndarray, challenger: ModelScores, policy: PromotionPolicy) -> _Screening:
    """Step 1: the challenger's sanity checks, then its metrics against the floors."""
    import numpy as np

    checks = sanity_checks(y, challenger)
    if checks["failures"]:
        failures = tuple(f"challenger failed a sanity check: {f}" for f in checks["failures"])
        return _Screening(checks, {}, failures)
    metrics = classification_metrics(y, np.asarray(challenger.scores, dtype=np.float64))
    failures, misses = [], []
    if not metrics["pr_auc"] >= policy.min_pr_auc:
        failures.append(f"PR-AUC {metrics['pr_auc']:.4f} is below the floor {policy.min_pr_auc}")
        misses.append("pr_auc")
    recall = metrics["recall_at_1pct_fpr"]
    if not recall >= policy.min_recall_at_1pct_fpr:
        failures.append(f"recall at 1% FPR {recall:.4f} is below the floor {policy.min_recall_at_1pct_fpr}")
        misses.append("recall_at_1pct_fpr")
    return _Screening(checks, metrics, tuple(failures), tuple(misses))


def _incomparable_champion(
    champion: ModelScores, champion_checks: dict[str, Any], screening: _Screening
) -> Decision:
    """A champion that fails its own sanity checks on these rows stays: replacing it is an operator's call."""
    reasons = tuple(
        f"the champion (version {champion.version}) cannot be compared on these rows: {f}; "
        "promote by hand with rollback(<version>) if it must be replaced"
        for f in champion_checks["failures"]
    )
    comparison = {"champion_checks": champion_checks}
    return Decision(False, KEPT, reasons, screening.metrics, None, comparison, screening.checks)


def _compare(
    y: np.ndarray,
    challenger: ModelScores,
    champion: ModelScores,
    challenger_metrics: dict[str, float],
    policy: PromotionPolicy,
) -> _Comparison:
    """Step 2: point differences against the margin, then the paired bootstrap's intervals."""
    import numpy as np

    champion_scores = np.asarray(champion.scores, dtype=np.float64)
    champion_metrics = classification_metrics(y, champion_scores)
    delta_pr = challenger_metrics["pr_auc"] - champion_metrics["pr_auc"]
    delta_recall = challenger_metrics["recall_at_1pct_fpr"] - champion_metrics["recall_at_1pct_fpr"]
    details: dict[str, Any] = {
        "champion_version": champion.version,
        "delta_pr_auc": delta_pr,
        "delta_recall_at_1pct_fpr": delta_recall,
        "margin": policy.margin,
        "added_columns": sorted(set(challenger.columns) - set(champion.columns)),
        "removed_columns": sorted(set(champion.columns) - set(challenger.columns)),
    }
    objections = []
    if delta_pr < policy.margin:
        verdict = "a tie (within the margin)" if abs(delta_pr) < policy.margin else "worse"
        objections.append(
            f"PR-AUC {challenger_metrics['pr_auc']:.4f} vs champion {champion_metrics['pr_auc']:.4f}: "
            f"difference {delta_pr:+.4f} is {verdict}; promotion needs at least +{policy.margin}"
        )
    if policy.bootstrap > 0:
        challenger_scores = np.asarray(challenger.scores, dtype=np.float64)
        boot = paired_bootstrap(
            y,
            challenger_scores,
            champion_scores,
            policy.bootstrap,
            policy.confidence,
            policy.seed,
            policy.bootstrap_rows,
            keep_draws=True,
        )
        draws = boot.pop("draws")
        details["bootstrap"] = boot
        objections += _bootstrap_objections(boot, policy.confidence)
        return _Comparison(champion_metrics, details, tuple(objections), draws)
    return _Comparison(champion_metrics, details, tuple(objections))


def _bootstrap_objections(boot: dict[str, Any], confidence: float) -> list[str]:
    """A PR-AUC gain that may be noise, or a recall that is significantly worse."""
    low_pr = boot["delta_pr_auc_interval"][0]
    high_rec = boot["delta_recall_at_1pct_fpr_interval"][1]
    level = f"{confidence:.0%}"
    objections = []
    if not low_pr > 0:
        objections.append(f"the {level} interval of the PR-AUC gain starts at {low_pr:+.4f}: not clearly > 0")
    if not high_rec >= 0:
        objections.append(
            f"recall at 1% FPR is significantly worse ({level} interval of the difference ends at "
            f"{high_rec:+.4f})"
        )
    return objections


def _verdict(
    champion: ModelScores, screening: _Screening, comparison: _Comparison, policy: PromotionPolicy
) -> Decision:
    """Step 3: promoted when nothing objects, else the champion is kept."""
    metrics, champion_metrics = screening.metrics, comparison.champion_metrics
    if comparison.objections:
        reasons = comparison.objections
    else:
        reasons = (
            f"PR-AUC {metrics['pr_auc']:.4f} beats champion version {champion.version} "
            f"({champion_metrics['pr_auc']:.4f}) by {comparison.details['delta_pr_auc']:+.4f} "
            f">= margin {policy.margin}",
        )
    promote = not comparison.objections
    return Decision(
        promote,
        PROMOTED if promote else KEPT,
        reasons,
        metrics,
        champion_metrics,
        comparison.details,
        screening.checks,
        evidence={"bootstrap_draws": comparison.draws} if comparison.draws else {},
    )
