"""The model and its baseline judged on the same OOT rows; the reference sample the drift monitor keeps."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.mlops import registry
from include.mlops.core.schema import LABEL
from include.mlops.training import (
    REFERENCE_ROWS,
    WEIGHT,
    FitResult,
    LabelledDays,
    TrainingSet,
    draw_reference_sample,
    evaluate,
    fit_baseline,
    fit_xgboost,
)

COLUMNS = ("amount_ratio", "night", "noise")


def _days(rows: int, seed: int, validation_from: int | None = None) -> LabelledDays:
    """Payments with three features and a label (about one in five a fraud)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=list(COLUMNS))
    frame[LABEL] = (frame["amount_ratio"] + 0.5 * frame["night"] + rng.normal(0, 0.5, rows) > 1.0).astype(
        "int8"
    )
    frame["transaction_id"] = [f"t{seed}-{i}" for i in range(rows)]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    frame["event_timestamp"] = [start + dt.timedelta(minutes=i) for i in range(rows)]
    frame[WEIGHT] = 1.0
    stats = {"rows_total": rows * 3, "negatives_total": rows * 2, "duplicate_labels": 1, "per_day": []}
    return LabelledDays(frame, [], stats)


def _training_set(oot_rows: int) -> TrainingSet:
    train, oot = _days(3000, 1), _days(oot_rows, 2)
    columns = list(COLUMNS)
    return TrainingSet(
        train=train,
        oot=oot,
        columns=COLUMNS,
        x=train.frame[columns],
        y=train.frame[LABEL].to_numpy(dtype=np.int32),
        weight=train.frame[WEIGHT].to_numpy(),
        in_validation=np.arange(len(train.frame)) >= 2400,
        x_oot=oot.frame[columns],
        y_oot=oot.frame[LABEL].to_numpy(dtype=np.int32),
        negatives_per_positive=20,
        read_seconds=1.0,
        feature_seconds=2.0,
    )


def _fitted(data: TrainingSet) -> FitResult:
    fit, val = data.in_fit, data.in_validation
    booster, report = fit_xgboost(
        data.x[fit], data.y[fit], data.weight[fit], data.x[val], data.y[val], data.weight[val],
        "cpu", 7, rounds=200, threads=1,
    )  # fmt: skip
    baseline = fit_baseline(data.x[fit], data.y[fit], data.weight[fit])
    return FitResult(booster, report, baseline, "cpu", train_seconds=3.0, baseline_seconds=4.0)


@pytest.fixture(scope="module")
def judged() -> tuple[TrainingSet, FitResult]:
    data = _training_set(REFERENCE_ROWS + 500)
    return data, _fitted(data)


def test_the_model_and_the_baseline_are_judged_on_the_same_oot_rows(
    judged: tuple[TrainingSet, FitResult],
) -> None:
    data, fitted = judged
    evaluation = evaluate(data, fitted)
    metrics = evaluation.metrics
    assert np.allclose(evaluation.scores, fitted.booster.inplace_predict(data.x_oot))
    assert metrics["pr_auc"] == evaluation.model["pr_auc"] and 0.5 < metrics["pr_auc"] <= 1
    assert metrics["baseline_pr_auc"] == evaluation.baseline["pr_auc"]
    assert metrics["pr_auc_margin_over_baseline"] == pytest.approx(
        metrics["pr_auc"] - metrics["baseline_pr_auc"]
    )
    assert (metrics["oot_rows"], metrics["oot_positives"]) == (len(data.y_oot), int(data.y_oot.sum()))
    assert (metrics["train_rows"], metrics["validation_rows"]) == (2400, 600)
    assert metrics["best_iteration"] == fitted.boosting.best_iteration
    # Sizes before sampling come from the reading stats; duplicates of both sets add up.
    assert (metrics["window_rows_total"], metrics["oot_rows_total"]) == (9000, 3 * len(data.y_oot))
    assert metrics["duplicate_labels"] == 2
    assert (metrics["read_seconds"], metrics["train_seconds"], metrics["gpu"]) == (1.0, 3.0, 0.0)


def test_the_reference_sample_holds_served_rows_with_their_prediction_and_label(
    judged: tuple[TrainingSet, FitResult],
) -> None:
    data, fitted = judged
    evaluation = evaluate(data, fitted)
    reference = draw_reference_sample(data, evaluation, 7)
    assert len(reference) == REFERENCE_ROWS and reference["transaction_id"].is_unique
    assert list(reference.columns) == [
        "transaction_id",
        "event_timestamp",
        *COLUMNS,
        registry.REFERENCE_SCORE,
        LABEL,
    ]
    rows = data.oot.frame.set_index("transaction_id").loc[reference["transaction_id"]]
    assert np.array_equal(reference[LABEL].to_numpy(), rows[LABEL].to_numpy())
    assert np.allclose(
        reference[registry.REFERENCE_SCORE], fitted.booster.inplace_predict(rows[list(COLUMNS)])
    )
    assert (
        draw_reference_sample(data, evaluation, 7)["transaction_id"].tolist()
        == reference["transaction_id"].tolist()
    )
