"""The quality metrics every stage shares are scikit-learn's, with weights that act as repeated rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_curve

from include.mlops.core.metrics import average_precision, recall_at_fpr


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(4000) < 0.02).astype(int)
    score = np.round(rng.random(4000) * 0.5 + y * rng.random(4000) * 0.6, 2)  # ties on purpose
    assert average_precision(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, score)
    assert recall_at_fpr(y, score, 0.01) == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)
    # Integer weights are the same as repeating rows (what the bootstrap relies on).
    w = rng.integers(0, 3, 4000)
    repeated = np.repeat(np.arange(4000), w)
    assert average_precision(y, score, w.astype(float)) == pytest.approx(
        average_precision_score(y[repeated], score[repeated]), abs=1e-12
    )


def test_metrics_without_a_fraud_are_undefined_not_zero() -> None:
    y = np.zeros(100, dtype=int)
    score = np.linspace(0, 1, 100)
    assert np.isnan(average_precision(y, score))
    assert np.isnan(recall_at_fpr(y, score))
