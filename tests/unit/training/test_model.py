"""The model's knobs reach XGBoost, the device is the one the booster reports, and the fitted booster is
the best round's, ready to score on any machine."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from include.mlops.core.policies import TrainingSettings
from include.mlops.training import (
    EARLY_STOPPING_ROUNDS,
    baseline_rows,
    booster_device,
    detect_device,
    fit_baseline,
    fit_xgboost,
    training_threads,
    xgb_params,
)


def _frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two informative columns and a noise column; about one row in five is a fraud."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["amount_ratio", "night", "noise"])
    y = (x["amount_ratio"] + 0.5 * x["night"] + rng.normal(0, 0.5, rows) > 1.0).to_numpy(dtype=np.int32)
    return x, y


def test_cpu_requested_is_cpu() -> None:
    assert detect_device("cpu") == "cpu"
    assert detect_device("CPU") == "cpu"


def test_an_unknown_device_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="MLOPS_TRAIN_DEVICE='tpu': expected auto, cpu or cuda"):
        detect_device("tpu")


def test_the_device_detected_is_the_one_a_booster_reports() -> None:
    device = detect_device("auto")
    assert device in ("cpu", "cuda")
    rng = np.random.default_rng(0)
    booster = xgb.train(
        {"device": device, "tree_method": "hist", "nthread": 1},
        xgb.DMatrix(rng.random((50, 3)), label=rng.integers(0, 2, 50)),
        2,
    )
    assert booster_device(booster).startswith(device)


def test_configured_threads_win_and_zero_means_the_cpus_this_process_may_use() -> None:
    assert training_threads(3) == 3
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= training_threads(0) <= (available or 1)


def test_xgboost_parameters_take_rounds_and_threads_from_the_knobs() -> None:
    defaults = xgb_params("cpu", 7)
    assert defaults["n_estimators"] == TrainingSettings().max_rounds == 600
    assert defaults["early_stopping_rounds"] == EARLY_STOPPING_ROUNDS
    assert (defaults["device"], defaults["random_state"]) == ("cpu", 7)
    knobs = TrainingSettings.from_env({"MLOPS_TRAIN_MAX_ROUNDS": "300", "MLOPS_TRAIN_THREADS": "2"})
    chosen = xgb_params("cuda", 3, rounds=knobs.max_rounds, threads=knobs.threads)
    assert (chosen["n_estimators"], chosen["n_jobs"], chosen["device"]) == (300, 2, "cuda")


def test_the_defaults_of_the_training_functions_are_the_knobs_defaults() -> None:
    from include.mlops.training import read_training_days

    knobs = TrainingSettings()
    assert inspect.signature(read_training_days).parameters["max_rows"].default == knobs.max_rows
    assert inspect.signature(fit_xgboost).parameters["rounds"].default == knobs.max_rounds
    assert inspect.signature(fit_xgboost).parameters["threads"].default == knobs.threads
    assert inspect.signature(detect_device).parameters["requested"].default == knobs.device


def test_the_fitted_booster_stops_at_the_best_round_and_scores_on_the_cpu() -> None:
    x, y = _frame(2000, 1)
    x_val, y_val = _frame(600, 2)
    booster, report = fit_xgboost(
        x, y, np.ones(len(y)), x_val, y_val, np.ones(len(y_val)), "cpu", 7, rounds=400, threads=1
    )
    assert report.device == "cpu"
    assert 0 <= report.best_iteration < 400
    # Later trees are cut: every consumer scores the model of the best validation round.
    assert booster.num_boosted_rounds() == report.best_iteration + 1
    assert booster_device(booster) == "cpu"
    assert 0.5 < report.validation_aucpr <= 1.0 and report.validation_logloss > 0
    assert report.params["n_estimators"] == 400 and "eval_metric" not in report.params
    scores = booster.inplace_predict(x_val)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_the_baseline_gives_probabilities_that_rank_frauds_first() -> None:
    x, y = _frame(2000, 1)
    x_val, y_val = _frame(600, 2)
    scores = fit_baseline(x, y, np.ones(len(y))).predict_proba(x_val.to_numpy())[:, 1]
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[y_val == 1].mean() > scores[y_val == 0].mean() + 0.3


def test_the_baseline_learns_from_every_fit_row_or_a_fixed_uniform_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from include.mlops.training import model

    assert np.array_equal(baseline_rows(80, 7), np.arange(80))
    monkeypatch.setattr(model, "MAX_BASELINE_ROWS", 50)
    rows = baseline_rows(80, 7)
    assert len(rows) == 50 == len(set(rows)) and np.array_equal(rows, np.sort(rows)) and rows.max() < 80
    assert np.array_equal(rows, baseline_rows(80, 7)) and not np.array_equal(rows, baseline_rows(80, 8))


def test_the_baseline_is_the_pipeline_scikit_learn_fits_and_leaves_the_rows_untouched() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def signed_log(values: np.ndarray) -> np.ndarray:
        return np.sign(values) * np.log1p(np.abs(values))

    rng = np.random.default_rng(3)
    x = rng.standard_cauchy(size=(4000, 11)).astype(np.float32)  # columns in two blocks of medians
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:, 5], x[:5, 2], x[5:9, 3] = np.nan, -0.0, 0.0  # an empty column, signed zeros
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=4000) > 1).astype(np.int32)
    w = rng.choice([1.0, 9.5], 4000)
    kept = x.copy()
    # What Pipeline.fit makes of the same steps, a new array per step.
    reference = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        FunctionTransformer(signed_log),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000),
    ).fit(x.astype(np.float64), y, logisticregression__sample_weight=w)

    baseline = fit_baseline(x, y, w)
    assert np.array_equal(x, kept, equal_nan=True), "the rows given are left as they are"
    later = rng.standard_cauchy(size=(500, 11))
    later[rng.random(later.shape) < 0.1] = np.nan
    unchanged = later.copy()
    scores = baseline.predict_proba(later)[:, 1]
    assert np.array_equal(scores, reference.predict_proba(later)[:, 1])
    assert np.array_equal(later, unchanged, equal_nan=True), "scoring writes into no caller's rows"
