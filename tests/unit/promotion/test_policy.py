"""The promotion policy as pure functions: sanity checks, the paired bootstrap and the decision.

Scores are synthetic (numpy only): no service, registry or trained model.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from include.mlops.core.policies import PromotionPolicy
from include.mlops.promotion.policy import (
    ALREADY,
    KEPT,
    PROMOTED,
    REJECTED,
    ModelScores,
    already_champion,
    decide,
    paired_bootstrap,
    sanity_checks,
)

LENIENT = PromotionPolicy(margin=0.005, min_pr_auc=0.1, min_recall_at_1pct_fpr=0.1, bootstrap=300)
"""Floors any model with signal passes: the comparison decides."""


def labels(n: int = 6000, rate: float = 0.02, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(int)


def scores(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Probabilities whose separation of the classes grows with ``signal``."""
    rng = np.random.default_rng(seed)
    logit = -4.5 + signal * y + rng.normal(0, 1, len(y))
    return 1 / (1 + np.exp(-logit))


def model(version: int, values: np.ndarray, columns: list[str] | None = None) -> ModelScores:
    return ModelScores(version, values, columns or ["a", "b"])


def by_rank(order: np.ndarray) -> np.ndarray:
    """Scores that rank the rows in ``order`` (first highest), in (0, 0.05]."""
    values = np.empty(len(order))
    values[order] = 0.05 * (1 - np.arange(len(order)) / len(order))
    return values


# --------------------------------------------------------------------------------------------------
# Step 1: sanity checks and floors


def test_without_a_champion_the_floors_decide() -> None:
    y = labels()
    policy = PromotionPolicy(min_pr_auc=0.3, min_recall_at_1pct_fpr=0.3, bootstrap=200)
    good = decide(y, model(1, scores(y, 5.0, 1)), None, policy)
    assert good.promote and good.outcome == PROMOTED, good.reason
    assert good.champion_metrics is None and good.comparison == {}
    poor = decide(y, model(1, scores(y, 0.5, 1)), None, policy)
    assert not poor.promote and poor.outcome == REJECTED
    assert "PR-AUC" in poor.reason and "below the floor 0.3" in poor.reason
    assert poor.challenger_metrics["pr_auc"] < 0.3  # the metrics that failed are recorded


def _nan(s: np.ndarray) -> None:
    s[:3] = np.nan


def _constant(s: np.ndarray) -> None:
    s[:] = 0.01


def _out_of_range(s: np.ndarray) -> None:
    s[0] = 1.7


def _uncalibrated(s: np.ndarray) -> None:
    s[:] = 0.9
    s[0] = 0.1


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_nan, "3 of 6000 scores are NaN or infinite"),
        (_constant, "constant scores"),
        (_out_of_range, "outside [0, 1]"),
        (_uncalibrated, "observed fraud rate"),
    ],
    ids=["nan", "constant", "out-of-range", "uncalibrated"],
)
def test_insane_scores_are_rejected_before_any_comparison(mutate: Any, expected: str) -> None:
    y = labels()
    values = scores(y, 5.0, 1)
    mutate(values)
    decision = decide(y, model(2, values), model(1, scores(y, 1.0, 2)), PromotionPolicy(bootstrap=0))
    assert not decision.promote and decision.outcome == REJECTED
    assert decision.reason.startswith("challenger failed a sanity check: ")
    assert expected in decision.reason
    assert decision.challenger_metrics == {} and decision.comparison == {}


def test_a_model_needing_unserved_columns_is_rejected() -> None:
    y = labels()
    challenger = ModelScores(2, None, ["a", "new_feature"], missing_columns=["new_feature"])
    decision = decide(y, challenger, None, PromotionPolicy(bootstrap=0))
    assert decision.outcome == REJECTED and "new_feature" in decision.reason
    assert decision.checks["signature_compatible"] is False


def test_sanity_checks_say_why_a_model_has_no_usable_scores() -> None:
    y = labels(100)
    failed = sanity_checks(y, ModelScores(1, None, ["a"], error="ValueError: bad input"))
    assert failed["signature_compatible"] is True
    assert failed["failures"] == ["it could not be scored: ValueError: bad input"]
    assert sanity_checks(y, ModelScores(1, None))["failures"] == ["it produced no scores"]
    short = sanity_checks(y, ModelScores(1, np.full(99, 0.02)))
    assert "99 scores for 100 rows" in short["failures"]
    nothing_finite = sanity_checks(y, ModelScores(1, np.full(100, np.nan)))
    assert "no finite score at all" in nothing_finite["failures"]


def test_sane_scores_pass_with_their_measurements() -> None:
    y = labels()
    checks = sanity_checks(y, model(1, scores(y, 5.0, 1)))
    assert checks["failures"] == []
    assert checks["non_finite_scores"] == 0
    assert 0 <= checks["score_min"] < checks["score_mean"] < checks["score_max"] <= 1
    assert 0.1 <= checks["mean_score_to_fraud_rate"] <= 10


# --------------------------------------------------------------------------------------------------
# Step 2: the comparison with the paired bootstrap


def test_identical_models_have_a_zero_paired_difference() -> None:
    y = labels()
    values = scores(y, 3.0, 1)
    boot = paired_bootstrap(y, values, values.copy(), 100, 0.9, seed=7)
    assert boot["delta_pr_auc_interval"] == [0.0, 0.0]
    assert boot["delta_recall_at_1pct_fpr_interval"] == [0.0, 0.0]
    assert (boot["rows"], boot["sampled"], boot["skipped"]) == (len(y), False, 0)


def test_the_bootstrap_is_seeded_and_samples_above_the_row_cap() -> None:
    y = labels()
    strong, medium = scores(y, 5.0, 1), scores(y, 3.0, 2)
    first = paired_bootstrap(y, strong, medium, 100, 0.9, seed=7)
    assert first == paired_bootstrap(y, strong, medium, 100, 0.9, seed=7)
    assert first["delta_pr_auc_interval"][0] > 0  # a clear gain
    capped = paired_bootstrap(y, strong, medium, 100, 0.9, seed=7, max_rows=2000)
    assert (capped["rows"], capped["sampled"]) == (2000, True)


def test_draws_without_a_fraud_are_skipped_and_counted() -> None:
    y = np.zeros(40, dtype=int)
    y[5] = 1
    values = np.linspace(0.01, 0.05, 40)
    boot = paired_bootstrap(y, values, values[::-1].copy(), 200, 0.9, seed=1)
    # A draw of 40 rows misses the one fraud with probability (39/40)^40, about 0.36.
    assert 30 < boot["skipped"] < 120


def test_a_champion_that_cannot_be_compared_is_kept() -> None:
    y = labels()
    broken = ModelScores(1, None, ["a", "b"], missing_columns=["b"])
    decision = decide(y, model(2, scores(y, 5.0, 1)), broken, LENIENT)
    assert not decision.promote and decision.outcome == KEPT
    assert "the champion (version 1) cannot be compared" in decision.reason
    assert "rollback(<version>)" in decision.reason
    assert decision.comparison["champion_checks"]["signature_compatible"] is False


# --------------------------------------------------------------------------------------------------
# Step 3: the verdict


def test_a_clearly_better_challenger_is_promoted() -> None:
    y = labels()
    decision = decide(y, model(2, scores(y, 5.0, 1), ["a", "b", "c"]), model(1, scores(y, 3.0, 2)), LENIENT)
    assert decision.promote and decision.outcome == PROMOTED, decision.reason
    assert "beats champion version 1" in decision.reason
    comparison = decision.comparison
    assert comparison["delta_pr_auc"] >= 0.005 and comparison["bootstrap"]["delta_pr_auc_interval"][0] > 0
    assert (comparison["added_columns"], comparison["removed_columns"]) == (["c"], [])
    assert decision.champion_metrics is not None
    assert decision.challenger_metrics["pr_auc"] > decision.champion_metrics["pr_auc"]


def test_a_worse_challenger_keeps_the_champion() -> None:
    y = labels()
    decision = decide(y, model(2, scores(y, 3.0, 2)), model(1, scores(y, 5.0, 1)), LENIENT)
    assert not decision.promote and decision.outcome == KEPT
    assert "is worse; promotion needs at least +0.005" in decision.reason


def test_a_difference_within_the_margin_is_a_tie() -> None:
    y = labels()
    strong = scores(y, 5.0, 1)
    same = decide(y, model(2, strong.copy()), model(1, strong), LENIENT)
    assert not same.promote and "a tie (within the margin)" in same.reason
    slightly_better = decide(
        y, model(2, scores(y, 5.0, 1)), model(1, scores(y, 4.8, 1)), PromotionPolicy(margin=0.5, bootstrap=0)
    )
    assert slightly_better.comparison["delta_pr_auc"] > 0
    assert not slightly_better.promote and "tie" in slightly_better.reason
    assert "bootstrap" not in slightly_better.comparison  # bootstrap=0: point estimates only


def test_a_gain_inside_the_noise_is_not_enough() -> None:
    # 300 rows, 6 frauds: a point gain above the margin, but an interval that includes 0.
    y = np.zeros(300, dtype=int)
    y[[10, 50, 90, 130, 170, 210]] = 1
    champion = scores(y, 3.0, 3)
    challenger = champion.copy()
    challenger[50] = champion.max() + 0.01  # one fraud moved to the top
    policy = PromotionPolicy(margin=0.005, min_pr_auc=0.0, min_recall_at_1pct_fpr=0.0, bootstrap=500)
    decision = decide(y, model(2, challenger), model(1, champion), policy)
    assert decision.comparison["delta_pr_auc"] > 0.005
    assert not decision.promote and "not clearly > 0" in decision.reason


def test_a_pr_auc_gain_does_not_buy_a_significantly_worse_recall() -> None:
    # The challenger ranks 60 % of the frauds first and the rest last (high PR-AUC, recall 0.6);
    # the champion puts every fraud among the top 1 % of good payments (lower PR-AUC, recall 1).
    y = np.r_[np.ones(200, dtype=int), np.zeros(19_800, dtype=int)]
    frauds, goods = np.arange(200), np.arange(200, 20_000)
    challenger = by_rank(np.r_[frauds[:120], goods, frauds[120:]])
    mixed = np.empty(240, dtype=int)
    mixed[::6], mixed[np.arange(240) % 6 != 0] = goods[100:140], frauds
    champion = by_rank(np.r_[goods[:100], mixed, goods[140:]])
    decision = decide(y, model(2, challenger), model(1, champion), LENIENT)
    assert decision.comparison["delta_pr_auc"] > 0.1  # the PR-AUC alone would promote it
    assert not decision.promote and decision.outcome == KEPT
    assert decision.reasons == (
        "recall at 1% FPR is significantly worse (90% interval of the difference ends at "
        f"{decision.comparison['bootstrap']['delta_recall_at_1pct_fpr_interval'][1]:+.4f})",
    )


def test_the_default_policy_is_the_documented_one() -> None:
    y = labels()
    decision = decide(y, model(2, scores(y, 5.0, 1)), model(1, scores(y, 3.0, 2)))
    assert decision.comparison["margin"] == PromotionPolicy().margin == 0.005
    assert decision.comparison["bootstrap"]["iterations"] == 1000
    assert decision.comparison["bootstrap"]["confidence"] == 0.9


def test_a_decision_is_recorded_as_json() -> None:
    y = labels()
    decision = decide(y, model(2, scores(y, 5.0, 1)), model(1, scores(y, 3.0, 2)), LENIENT)
    recorded = json.loads(json.dumps(decision.as_dict()))
    assert recorded["outcome"] == PROMOTED and recorded["reason"] == decision.reason
    assert recorded["reasons"] == list(decision.reasons)
    assert recorded["comparison"]["champion_version"] == 1


def test_a_version_already_champion_is_not_judged_again() -> None:
    decision = already_champion(4)
    assert (decision.promote, decision.outcome) == (False, ALREADY)
    assert decision.reason == "version 4 is already the champion"


def test_a_floor_the_champion_misses_too_does_not_reject_a_challenger_that_beats_it() -> None:
    """The world moved: both models are below the PR-AUC floor on these days; the better one wins."""
    y, good, weak = _world_where_both_miss_the_floor()
    policy = PromotionPolicy(min_pr_auc=0.99, min_recall_at_1pct_fpr=0.0, bootstrap=100)
    decision = decide(y, ModelScores(2, good), ModelScores(1, weak), policy)
    assert decision.promote and decision.outcome == PROMOTED
    assert any("as is the champion's" in r and "the comparison decides" in r for r in decision.reasons)


def test_a_floor_the_champion_meets_still_rejects() -> None:
    y, _good, weak = _world_where_both_miss_the_floor()
    policy = PromotionPolicy(min_pr_auc=0.99, min_recall_at_1pct_fpr=0.0, bootstrap=100)
    # The champion is perfect on these days: the weaker challenger is below a floor it meets.
    decision = decide(y, ModelScores(2, weak), ModelScores(1, y.astype(float)), policy)
    assert not decision.promote and decision.outcome == REJECTED
    assert any("below the floor" in r for r in decision.reasons)


def _world_where_both_miss_the_floor():
    import numpy as np

    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < 0.02).astype(int)
    good = np.clip(0.02 + 0.5 * y * rng.random(len(y)) + 0.2 * rng.random(len(y)), 0, 1)
    weak = np.clip(0.02 + 0.15 * y * rng.random(len(y)) + 0.2 * rng.random(len(y)), 0, 1)
    return y, good, weak
