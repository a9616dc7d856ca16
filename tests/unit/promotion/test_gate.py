"""The whole gate on constructed scores: overall rules, per-slice non-regression and fairness.

The payments are synthetic (numpy and pandas only): a frame with the columns the slices and the
card-holder regions come from, labels, and scores whose signal is set per slice or per group.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from include.mlops.core.policies import PromotionPolicy
from include.mlops.promotion import (
    KEPT,
    PROMOTED,
    REJECTED,
    SLICE_FAIL,
    SLICE_NOT_COMPARED,
    SLICE_PASS,
    SLICE_TOO_SMALL,
    ModelScores,
    decision_tags,
    judge,
    subgroups,
)

# The constructed regions hold a few thousand good payments each: judged from 1000 on.
POLICY = PromotionPolicy(
    min_pr_auc=0.1, min_recall_at_1pct_fpr=0.1, bootstrap=150, slice_bootstrap=80, fairness_min_negatives=1000
)
"""Floors any model with signal passes; lighter bootstraps than the defaults (same rules)."""

FAIRNESS_ONLY = POLICY.with_(slice_bootstrap=0)
"""For the fairness tests: slices judged on point estimates (no bootstrap), the same audit."""


def payments(n: int = 40_000, rate: float = 0.02, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Payments with every slicing column, and their labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    channel = rng.choice(["pos", "online", "atm"], n, p=[0.6, 0.3, 0.1])
    frame = pd.DataFrame(
        {
            "channel": channel,
            "card_present": channel != "online",
            "merchant_category": rng.choice(
                ["grocery", "travel", "electronics", "digital_goods"], n, p=[0.45, 0.25, 0.27, 0.03]
            ),
            "card_country": rng.choice(["DE", "FR", "GB", "US", "NG"], n, p=[0.35, 0.15, 0.2, 0.2, 0.1]),
            "amount": rng.lognormal(3.5, 1.0, n),
            "customer_txn_count_30d": rng.integers(0, 20, n).astype(float),
        }
    )
    return frame, y


def scores(
    y: np.ndarray, signal: float | np.ndarray, seed: int, shift: np.ndarray | float = 0.0
) -> np.ndarray:
    """Probabilities separating the classes by ``signal`` (per row if an array), logits moved by ``shift``."""
    rng = np.random.default_rng(seed)
    logit = -5.0 + np.broadcast_to(signal, y.shape) * y + rng.normal(0, 1, len(y)) + shift
    return 1 / (1 + np.exp(-logit))


def model(version: int, values: np.ndarray) -> ModelScores:
    return ModelScores(version, values, ["a", "b"])


def by_slice(decision, name: str) -> dict:
    (record,) = [r for r in decision.slices if r["slice"] == name]
    return record


def test_a_challenger_better_overall_but_worse_on_one_slice_is_refused_naming_the_slice() -> None:
    frame, y = payments()
    travel = (frame["merchant_category"] == "travel").to_numpy()
    champion = scores(y, 3.0, seed=1)
    # Much sharper everywhere, but far weaker at travel merchants.
    challenger = scores(y, np.where(travel, 1.5, 5.0), seed=2)

    overall_only = judge(y, model(2, challenger), model(1, champion), POLICY)
    assert overall_only.promote, overall_only.reason  # the overall rules alone would promote it

    decision = judge(y, model(2, challenger), model(1, champion), POLICY, subgroups(frame))
    assert not decision.promote and decision.outcome == KEPT
    assert "slice merchant_category=travel regresses" in decision.reason
    travel_record = by_slice(decision, "merchant_category=travel")
    assert travel_record["status"] == SLICE_FAIL
    assert travel_record["delta_pr_auc"] < -POLICY.slice_margin
    assert travel_record["interval"][1] < 0  # the loss is no chance
    assert by_slice(decision, "merchant_category=grocery")["status"] == SLICE_PASS
    # The other reasons of the overall comparison are not the ones that refused it.
    assert not any("PR-AUC" in r and "margin" in r and "slice" not in r for r in decision.reasons)
    tags = decision_tags(decision, len(y), "2026-01-01T00:00:00+00:00", 1)
    assert "merchant_category=travel" in tags["gate_slices"] and "1 failing" in tags["gate_slices"]


def test_a_challenger_whose_fairness_disparity_exceeds_the_bound_is_rejected() -> None:
    frame, y = payments()
    nigeria = (frame["card_country"] == "NG").to_numpy()
    champion = scores(y, 3.5, seed=1)
    # Better at fraud, but good customers with Nigerian cards score far higher than others.
    challenger = scores(y, 5.0, seed=2, shift=np.where(nigeria & (y == 0), 2.5, 0.0))

    decision = judge(y, model(2, challenger), model(1, champion), FAIRNESS_ONLY, subgroups(frame))
    assert decision.outcome == REJECTED and not decision.promote
    assert "fairness: good customers of africa would be declined" in decision.reason
    mine = decision.fairness["challenger"]
    assert mine["worst_fpr_group"] == "africa" and mine["fpr_disparity"] > POLICY.fairness_max_disparity
    assert mine["threshold_source"] == "computed on the evaluation rows"
    africa = next(g for g in mine["groups"] if g["group"] == "africa")
    assert africa["false_positive_rate"] > 3 * mine["overall"]["false_positive_rate"]
    assert decision.fairness["champion"]["fpr_disparity"] < POLICY.fairness_max_disparity


def test_a_disparity_grown_beyond_the_margin_over_the_champions_keeps_the_champion() -> None:
    frame, y = payments()
    nigeria = (frame["card_country"] == "NG").to_numpy()
    champion = scores(y, 3.5, seed=1)
    challenger = scores(y, 5.0, seed=2, shift=np.where(nigeria & (y == 0), 0.9, 0.0))
    policy = FAIRNESS_ONLY.with_(fairness_max_disparity=50.0)  # only the growth can object

    decision = judge(y, model(2, challenger), model(1, champion), policy, subgroups(frame))
    assert decision.outcome == KEPT
    assert "false-positive-rate disparity across card-holder regions grows" in decision.reason
    mine, theirs = decision.fairness["challenger"], decision.fairness["champion"]
    assert mine["fpr_disparity"] > theirs["fpr_disparity"] + policy.fairness_margin


def test_a_clean_challenger_passes_and_says_what_was_checked() -> None:
    frame, y = payments()
    champion = scores(y, 3.0, seed=1)
    challenger = scores(y, 4.5, seed=2)

    decision = judge(y, model(2, challenger), model(1, champion), POLICY, subgroups(frame))
    assert decision.promote and decision.outcome == PROMOTED, decision.reason
    judged = [r for r in decision.slices if r["status"] in (SLICE_PASS, SLICE_FAIL)]
    assert len(judged) >= 12 and all(r["status"] == SLICE_PASS for r in judged)
    assert all(r["interval"] is not None for r in judged)  # each judged slice has its bootstrap
    assert f"{len(judged)} slices judged, none regresses" in decision.reason
    assert "fairness disparity" in decision.reason
    assert decision.fairness["objections"] == []
    json.dumps(decision.as_dict())  # the record is JSON, the bootstrap's draws kept apart
    assert "evidence" not in decision.as_dict()
    assert len(decision.evidence["bootstrap_draws"]["delta_pr_auc"]) == POLICY.bootstrap


def test_slices_too_small_to_judge_are_reported_not_gated() -> None:
    frame, y = payments()
    digital = (frame["merchant_category"] == "digital_goods").to_numpy()
    champion = scores(y, 3.0, seed=1)
    # Useless on digital goods, where there are too few frauds to tell.
    challenger = scores(y, np.where(digital, 0.0, 4.5), seed=2)
    assert y[digital].sum() < POLICY.slice_min_positives

    decision = judge(y, model(2, challenger), model(1, champion), POLICY, subgroups(frame))
    assert decision.promote, decision.reason
    record = by_slice(decision, "merchant_category=digital_goods")
    assert record["status"] == SLICE_TOO_SMALL and record["interval"] is None
    assert record["challenger_pr_auc"] < record["champion_pr_auc"]  # reported all the same
    assert "too small to judge" in decision.reason


def test_without_a_champion_slices_are_reported_and_fairness_still_bounds() -> None:
    frame, y = payments()
    decision = judge(y, model(1, scores(y, 4.0, seed=2)), None, POLICY, subgroups(frame))
    assert decision.promote
    assert {r["status"] for r in decision.slices} == {SLICE_NOT_COMPARED}
    assert decision.fairness["challenger"] is not None and decision.fairness["champion"] is None

    nigeria = (frame["card_country"] == "NG").to_numpy()
    unfair = scores(y, 4.0, seed=2, shift=np.where(nigeria & (y == 0), 2.5, 0.0))
    refused = judge(y, model(1, unfair), None, POLICY, subgroups(frame))
    assert refused.outcome == REJECTED and "fairness" in refused.reason


def test_rows_without_card_country_are_not_audited_and_not_gated() -> None:
    frame, y = payments()
    groups = subgroups(frame.drop(columns=["card_country"]))
    decision = judge(
        y, model(2, scores(y, 4.5, seed=2)), model(1, scores(y, 3.0, seed=1)), FAIRNESS_ONLY, groups
    )
    assert decision.promote
    assert decision.fairness["audited"] is False and "card_country" in decision.fairness["skipped"]
    assert groups.unavailable == ["card_country"]
    tags = decision_tags(decision, len(y), "2026-01-01T00:00:00+00:00", 1)
    assert tags["gate_fairness"].startswith("not audited")


def test_the_recorded_threshold_of_a_version_is_the_one_audited() -> None:
    frame, y = payments()
    values = scores(y, 4.0, seed=2)
    recorded = float(np.quantile(values[y == 0], 0.95))  # a looser threshold than 1 % FPR
    scored = ModelScores(1, values, ["a"], threshold=recorded)
    decision = judge(y, scored, None, POLICY, subgroups(frame))
    mine = decision.fairness["challenger"]
    assert mine["threshold"] == recorded and mine["threshold_source"] == "version tag"
    assert mine["overall"]["false_positive_rate"] == pytest.approx(0.05, abs=0.005)


@pytest.mark.parametrize("column", ["channel", "amount", "customer_txn_count_30d"])
def test_a_dimension_without_its_column_is_unavailable(column: str) -> None:
    frame, _ = payments(n=500)
    groups = subgroups(frame.drop(columns=[column]))
    expected = {"channel": "channel", "amount": "amount_band", "customer_txn_count_30d": "customer_tenure"}
    assert groups.unavailable == [expected[column]]
    assert not [s for s in groups.slices if s.dimension == expected[column]]


def test_amount_bands_and_tenure_cut_where_documented() -> None:
    frame = pd.DataFrame(
        {"amount": [0.5, 5.0, 49.99, 250.0, 999.0, 1000.0], "customer_txn_count_30d": [None, 0, 1, 3, 0, 9]}
    )
    groups = subgroups(frame)
    named = {s.name: np.flatnonzero(s.mask).tolist() for s in groups.slices}
    assert named["amount_band=under 5"] == [0]
    assert named["amount_band=5-50"] == [1, 2]
    assert named["amount_band=250-1000"] == [3, 4]
    assert named["amount_band=1000 and more"] == [5]
    assert named["customer_tenure=new"] == [0, 1, 4]
    assert named["customer_tenure=established"] == [2, 3, 5]
