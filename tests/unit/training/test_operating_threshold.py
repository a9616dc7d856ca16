"""The operating threshold: the score from which a payment is declined, at the policy's 1 % FPR."""

from __future__ import annotations

import numpy as np
import pytest

from include.mlops.core.metrics import TARGET_FPR, recall_at_fpr
from include.mlops.training import operating_threshold


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounded", [False, True])
def test_flags_at_the_threshold_have_the_policy_fpr_and_the_metrics_recall(seed: int, rounded: bool) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(20_000) < 0.01).astype(int)
    scores = 1 / (1 + np.exp(-(-4.5 + 3.0 * y + rng.normal(0, 1, len(y)))))
    if rounded:  # ties, as a coarse model gives
        scores = np.round(scores, 3)
    threshold = operating_threshold(y, scores)
    flagged = scores >= threshold
    assert flagged[y == 0].mean() <= TARGET_FPR
    assert flagged[y == 1].mean() == pytest.approx(recall_at_fpr(y, scores), abs=1e-12)
    # The threshold is as low as it may be: one notch lower would flag too many good payments.
    lower = scores[scores < threshold]
    if len(lower):
        assert (scores[y == 0] >= lower.max()).mean() > TARGET_FPR


def test_without_a_good_payment_there_is_no_threshold() -> None:
    assert operating_threshold(np.ones(5, dtype=int), np.linspace(0.1, 0.9, 5)) is None


def test_when_the_top_score_is_a_good_payment_nothing_is_flagged() -> None:
    y = np.array([0, 1, 0, 0])  # 3 good payments: 1 % of them is none
    scores = np.array([0.9, 0.5, 0.2, 0.1])
    threshold = operating_threshold(y, scores)
    assert threshold > 0.9 and not (scores >= threshold).any()


def test_a_loose_rate_flags_every_payment() -> None:
    y = np.array([0, 1, 0])
    assert operating_threshold(y, np.array([0.3, 0.2, 0.1]), fpr=1.0) == 0.1
