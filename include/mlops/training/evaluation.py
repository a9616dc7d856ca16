"""How good the model is: its metrics on the out-of-time days beside the baseline's, its operating
threshold, and the reference sample the drift monitor compares served traffic with.

:func:`evaluate` is the training run's step; its :attr:`Evaluation.metrics` are what the MLflow run
logs (and :func:`~include.mlops.training.trainer.train` returns). :func:`operating_threshold` is
the score from which a payment is declined: the one whose false-positive rate on the OOT days is
the policy's (1 %); registration records it on the version, batch scoring and the scoring
service read it from there, and promotion audits fairness at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.metrics import TARGET_FPR, classification_metrics
from include.mlops.core.schema import LABEL
from include.mlops.training.stream import predict_in_batches

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.training.dataset import TrainingSet
    from include.mlops.training.model import FitResult


logger = logging.getLogger(__name__)

REFERENCE_ROWS = 5_000
"""OOT rows in the drift monitor's reference sample."""


@dataclass(frozen=True)
class Evaluation:
    """The model and the baseline judged on the same OOT rows."""

    model: dict[str, float]
    """The model's classification metrics on the OOT days (``pr_auc``, ``recall_at_1pct_fpr`` ...)."""
    baseline: dict[str, float]
    """The baseline's, same names."""
    scores: np.ndarray
    """The model's fraud probability of each OOT row."""
    metrics: dict[str, float]
    """Every metric of the run: quality, sizes of the sets, timings and the device."""
    threshold: float | None = None
    """The operating threshold on the OOT days (:func:`operating_threshold`); ``None`` without a
    good payment to set it on."""


def operating_threshold(y: np.ndarray, scores: np.ndarray, fpr: float = TARGET_FPR) -> float | None:
    """The lowest score ``t`` such that at most ``fpr`` of the good payments (``y == 0``) score ``>= t``.

    A payment is flagged when its score is at least ``t``: on these rows the flags then have
    a false-positive rate of at most ``fpr`` and the recall of
    :func:`~include.mlops.core.metrics.recall_at_fpr` (the same distinct-score thresholds).
    ``None`` when there is no good payment; above every score when even the top one would
    exceed ``fpr`` (nothing is flagged).
    """
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    negatives = np.sort(s[np.asarray(y) == 0])[::-1]
    if not len(negatives):
        return None
    # The same tolerance as recall_at_fpr: fp / negatives <= fpr + 1e-12.
    allowed = int(np.floor((fpr + 1e-12) * len(negatives)))
    if allowed >= len(negatives):
        return float(s.min())
    bar = negatives[allowed]  # the highest good payment that must stay below the threshold
    above = s[s > bar]
    return float(above.min()) if len(above) else float(np.nextafter(bar, np.inf))


def reference_positions(rows: int, seed: int) -> np.ndarray:
    """The positions, among ``rows`` OOT rows, of the drift monitor's reference sample: at most
    :data:`REFERENCE_ROWS`, drawn by ``seed``, sorted. Known before the features are read, so the
    dataset keeps those rows as Feast served them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(REFERENCE_ROWS, rows), replace=False))


def evaluate(data: TrainingSet, fitted: FitResult) -> Evaluation:
    """Score the OOT rows with the model and the baseline, batch by batch, and gather the run's metrics."""
    import numpy as np

    rows = data.out_of_time
    scores = predict_in_batches(fitted.booster.inplace_predict, rows)
    model = classification_metrics(rows.y, scores)
    threshold = operating_threshold(rows.y, scores)
    baseline_scores = predict_in_batches(
        lambda x: fitted.baseline.predict_proba(x.astype(np.float64))[:, 1], rows
    )
    baseline = classification_metrics(rows.y, baseline_scores)
    logger.info(
        "OOT PR-AUC %.4f (baseline %.4f), recall at 1%% FPR %.4f",
        model["pr_auc"], baseline["pr_auc"], model["recall_at_1pct_fpr"],
    )  # fmt: skip
    metrics = _run_metrics(data, fitted, model, baseline)
    if threshold is not None:
        metrics["operating_threshold"] = threshold
    return Evaluation(model, baseline, scores, metrics, threshold)


def _run_metrics(
    data: TrainingSet, fitted: FitResult, model: dict[str, float], baseline: dict[str, float]
) -> dict[str, float]:
    """The metrics the MLflow run logs, in the order they are reported."""
    fit, val, oot = data.fit, data.validation, data.out_of_time
    boosting = fitted.boosting
    return {
        **model,
        **{f"baseline_{k}": v for k, v in baseline.items()},
        "pr_auc_margin_over_baseline": model["pr_auc"] - baseline["pr_auc"],
        "validation_aucpr": boosting.validation_aucpr,
        "validation_logloss": boosting.validation_logloss,
        "best_iteration": boosting.best_iteration,
        "train_rows": len(fit),
        "train_positives": int(fit.y.sum()),
        "validation_rows": len(val),
        "validation_positives": int(val.y.sum()),
        "window_rows_total": data.train.stats["rows_total"],
        "window_negatives_total": data.train.stats["negatives_total"],
        "oot_rows": len(oot),
        "oot_positives": int(oot.y.sum()),
        "oot_fraud_rate": float(oot.y.mean()),
        "oot_rows_total": data.oot.stats["rows_total"],
        "duplicate_labels": data.train.stats["duplicate_labels"] + data.oot.stats["duplicate_labels"],
        "train_seconds": fitted.train_seconds,
        "baseline_train_seconds": fitted.baseline_seconds,
        "read_seconds": data.read_seconds,
        "feature_seconds": data.feature_seconds,
        "gpu": 1.0 if fitted.device.startswith("cuda") else 0.0,
    }


def draw_reference_sample(data: TrainingSet, evaluation: Evaluation, seed: int) -> pd.DataFrame:
    """At most :data:`REFERENCE_ROWS` OOT rows as served (ids, timestamps, features) with the model's
    prediction and the label: what the drift monitor compares later traffic with (logged on the
    run, read back with :func:`include.mlops.registry.reference_sample`).

    The rows are those of :func:`reference_positions`, which the dataset kept as Feast served
    them; ``seed`` must be the one the dataset was built with.
    """
    import numpy as np

    pick = reference_positions(len(data.y_oot), seed)
    if not np.array_equal(pick, data.reference.index.to_numpy()):
        raise ValueError(f"the training set kept the reference rows of another seed than {seed}")
    reference = data.reference[["transaction_id", "event_timestamp", *data.columns]].copy()
    reference[registry.REFERENCE_SCORE] = evaluation.scores[pick]
    reference[LABEL] = data.y_oot[pick]
    return reference
