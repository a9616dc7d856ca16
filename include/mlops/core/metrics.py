"""Model-quality metrics for fraud: PR-AUC and recall at a fixed false-positive rate (pure, numpy).

Vectorised and weight-aware, so training, promotion (its paired bootstrap), the drift monitor's
performance check and the tests compute the very same numbers. numpy and scikit-learn are
imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TARGET_FPR = 0.01
"""The operating point of fraud screening: at most 1 % of good payments flagged."""


def _curve(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None):
    """Cumulative true and false positives at each distinct threshold, highest score first."""
    import numpy as np

    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order].astype(np.float64)
    w = np.ones_like(yy) if weight is None else weight[order].astype(np.float64)
    tp = np.cumsum(w * yy)
    fp = np.cumsum(w * (1.0 - yy))
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    return tp[last], fp[last]


def average_precision(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """PR-AUC as average precision (sklearn's definition), optionally with row weights."""
    import numpy as np

    tp, fp = _curve(y, score, weight)
    if len(tp) == 0 or tp[-1] <= 0:
        return float("nan")
    recall = tp / tp[-1]
    precision = tp / np.maximum(tp + fp, 1e-300)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(
    y: np.ndarray, score: np.ndarray, fpr: float = TARGET_FPR, weight: np.ndarray | None = None
) -> float:
    """The highest recall among thresholds whose false-positive rate is at most ``fpr``."""
    import numpy as np

    tp, fp = _curve(y, score, weight)
    if len(tp) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
        return float("nan")
    ok = fp / fp[-1] <= fpr + 1e-12
    return float(np.max(tp[ok] / tp[-1], initial=0.0))


def classification_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """PR-AUC, recall at 1 % FPR, ROC-AUC and log-loss of probabilities ``score`` for labels ``y``."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    both = len(np.unique(y)) == 2
    return {
        "pr_auc": average_precision(y, score),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, TARGET_FPR),
        "roc_auc": float(roc_auc_score(y, score)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }
