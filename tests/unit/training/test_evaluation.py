"""The model and its baseline judged on the same OOT rows; the reference sample the drift monitor keeps."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from include.mlops import registry
from include.mlops.core.metrics import classification_metrics
from include.mlops.core.schema import LABEL
from include.mlops.training import (
    REFERENCE_ROWS,
    WEIGHT,
    FeatureRows,
    FitResult,
    LabelledDays,
    TrainingSet,
    draw_reference_sample,
    evaluate,
    fit_baseline,
    fit_boosting,
    reference_positions,
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


def _rows(days: LabelledDays, weighted: bool, batch_rows: int) -> FeatureRows:
    frame = days.frame
    rows = FeatureRows.of(frame[list(COLUMNS)], frame[LABEL], frame[WEIGHT] if weighted else None)
    return replace(rows, batch_rows=batch_rows)


def _training_set(oot_rows: int, batch_rows: int = 1000) -> TrainingSet:
    train, oot = _days(3000, 1), _days(oot_rows, 2)
    rows = _rows(train, True, batch_rows)
    out_of_time = _rows(oot, False, batch_rows)
    picked = reference_positions(oot_rows, 7)
    return TrainingSet(
        train=train,
        oot=oot,
        columns=COLUMNS,
        fit=rows.part(0, 2400),
        validation=rows.part(2400, 3000),
        out_of_time=out_of_time,
        reference=oot.frame.iloc[picked][["transaction_id", "event_timestamp", *COLUMNS]],
        negatives_per_positive=20,
        read_seconds=1.0,
        feature_seconds=2.0,
    )


def _fitted(data: TrainingSet) -> FitResult:
    booster, report = fit_boosting(data.fit, data.validation, "cpu", 7, rounds=200, threads=1)
    baseline = fit_baseline(data.fit.x, data.fit.y, data.fit.weight)
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
    # Scored batch by batch: the scores of the whole frame at once. XGBoost computes in float32
    # whatever its input; the baseline sees the float32 features the set keeps, a float64 frame
    # moves its metrics by float32's rounding only.
    oot = data.oot.frame[list(COLUMNS)]
    assert np.array_equal(evaluation.scores, fitted.booster.inplace_predict(oot))
    baseline = fitted.baseline.predict_proba(oot.to_numpy("float32").astype("float64"))[:, 1]
    assert evaluation.baseline == classification_metrics(data.y_oot, baseline)
    in_float64 = classification_metrics(data.y_oot, fitted.baseline.predict_proba(oot.to_numpy())[:, 1])
    assert evaluation.baseline == pytest.approx(in_float64, rel=1e-6)
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


def test_the_reference_rows_are_a_fixed_draw_of_the_seed_and_the_set_must_hold_them(
    judged: tuple[TrainingSet, FitResult],
) -> None:
    picked = reference_positions(REFERENCE_ROWS + 500, 7)
    assert len(picked) == REFERENCE_ROWS and len(set(picked)) == REFERENCE_ROWS
    assert np.array_equal(picked, np.sort(picked)) and np.array_equal(picked, reference_positions(5500, 7))
    assert len(reference_positions(30, 7)) == 30, "every row when there are fewer"
    data, fitted = judged
    with pytest.raises(ValueError, match="reference rows of another seed than 8"):
        draw_reference_sample(data, evaluate(data, fitted), 8)
