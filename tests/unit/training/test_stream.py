"""Features kept as float32 blocks and fed to XGBoost batch by batch give the model of the same rows in one
piece: the same quantile cuts, the same trees, the same scores, the booster the scikit-learn wrapper
fits on float64 frames in memory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost as xgb

from include.mlops.features import FEATURE_COLUMNS
from include.mlops.training import (
    EARLY_STOPPING_ROUNDS,
    FeatureRows,
    fit_boosting,
    frame_with_features,
    mapped_rows,
    predict_in_batches,
    quantile_matrix,
    read_features,
    spill_rows,
    xgb_params,
)
from tests.unit.training.conftest import fake_feature_values

COLUMNS = tuple(f"f{i}" for i in range(8))


def _frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Skewed features with ties (counts) and missing values, noisy labels, two negative weights."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=(rows, len(COLUMNS)))
    x[:, :3] = np.round(x[:, :3] * 3)
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 4]) + rng.normal(0, 2, rows) > 4).astype(np.int32)
    w = np.where(y == 1, 1.0, rng.choice([8.0, 12.5], rows))
    return pd.DataFrame(x, columns=list(COLUMNS)), y, w


def _rows(rows: int, seed: int, batch_rows: int) -> FeatureRows:
    x, y, w = _frame(rows, seed)
    return replace(FeatureRows.of(x, y, w), batch_rows=batch_rows)


@pytest.fixture(scope="module")
def fit_and_validation() -> tuple[FeatureRows, FeatureRows]:
    """12,000 fit rows and 3,000 validation rows in one batch each."""
    return _rows(12_000, 1, 12_000), _rows(3_000, 2, 3_000)


def test_rows_come_in_batches_of_views_in_order() -> None:
    rows = _rows(10, 3, 4)
    parts = list(rows.batches())
    assert [len(p) for p in parts] == [4, 4, 2]
    assert all(np.shares_memory(p.x, rows.x) for p in parts), "views, no copy"
    assert np.array_equal(np.concatenate([p.x for p in parts]), rows.x, equal_nan=True)
    assert np.array_equal(np.concatenate([p.weight for p in parts]), rows.weight)
    assert np.shares_memory(rows.frame().to_numpy(), rows.x) and list(rows.frame().columns) == list(COLUMNS)


def test_many_batches_give_the_quantile_cuts_of_one_batch(
    fit_and_validation: tuple[FeatureRows, ...],
) -> None:
    fit, _ = fit_and_validation
    one = quantile_matrix(fit, 256, 1).get_quantile_cut()
    for batch_rows in (1_000, 4_999):
        many = quantile_matrix(replace(fit, batch_rows=batch_rows), 256, 1).get_quantile_cut()
        assert all(np.array_equal(a, b) for a, b in zip(one, many, strict=True)), batch_rows
    # The sketch is an approximate one here: far more distinct values than bins.
    pointers, _ = one
    assert np.diff(pointers)[4] <= 257 < len(np.unique(fit.x[:, 4]))


def test_many_batches_give_the_booster_of_one_batch(fit_and_validation: tuple[FeatureRows, ...]) -> None:
    fit, validation = fit_and_validation
    one, report = fit_boosting(fit, validation, "cpu", 7, rounds=300, threads=1)
    many, many_report = fit_boosting(
        replace(fit, batch_rows=1_777), replace(validation, batch_rows=500), "cpu", 7, rounds=300, threads=1
    )
    assert many.save_raw("json") == one.save_raw("json")
    assert many_report == report
    assert report.best_iteration + 1 < 300, "early stopping took place"


def test_the_streamed_booster_is_the_one_the_scikit_learn_wrapper_fits_on_float64_frames() -> None:
    # The fit before the streamed one: XGBClassifier on float64 frames, cut at the best round.
    x, y, w = _frame(12_000, 1)
    x_val, y_val, w_val = _frame(3_000, 2)
    params = xgb_params("cpu", 7, rounds=300, threads=1)
    model = xgb.XGBClassifier(**params)
    model.fit(x, y, sample_weight=w, eval_set=[(x_val, y_val)], sample_weight_eval_set=[w_val], verbose=False)
    in_memory = model.get_booster()[: model.best_iteration + 1]
    in_memory.set_param({"device": "cpu"})

    fit = replace(FeatureRows.of(x, y, w), batch_rows=2_500)
    validation = replace(FeatureRows.of(x_val, y_val, w_val), batch_rows=1_000)
    streamed, report = fit_boosting(fit, validation, "cpu", 7, rounds=300, threads=1)
    assert streamed.save_raw("json") == in_memory.save_raw("json")
    assert report.best_iteration == model.best_iteration
    history = model.evals_result()["validation_0"]
    assert report.validation_logloss == history["logloss"][model.best_iteration]
    # Watched once at the best round, not after every round: the same PR-AUC the wrapper logged.
    assert report.validation_aucpr == history["aucpr"][model.best_iteration]
    assert np.array_equal(streamed.inplace_predict(x_val), in_memory.inplace_predict(x_val))
    assert streamed.feature_names == list(COLUMNS) and streamed.feature_types == in_memory.feature_types
    assert model.best_iteration + EARLY_STOPPING_ROUNDS + 1 == model.get_booster().num_boosted_rounds()


def test_scores_in_batches_are_the_scores_of_all_rows_at_once(
    fit_and_validation: tuple[FeatureRows, ...],
) -> None:
    fit, validation = fit_and_validation
    booster, _ = fit_boosting(fit, validation, "cpu", 7, rounds=20, threads=1)
    scores = predict_in_batches(booster.inplace_predict, replace(validation, batch_rows=333))
    assert scores.dtype == np.float64 and len(scores) == len(validation)
    assert np.array_equal(scores, booster.inplace_predict(validation.x))
    assert len(predict_in_batches(booster.inplace_predict, validation.part(0, 0))) == 0


def test_features_are_read_chunk_by_chunk_into_one_float32_matrix(fake_feast: list[int]) -> None:
    amounts = [1000.0 + i / 3 for i in range(1000)]
    stamps = pa.array([pd.Timestamp("2026-03-01 12:00", tz="UTC")] * 1000, pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {"transaction_id": [f"t{i}" for i in range(1000)], "event_timestamp": stamps, "amount": amounts}
    )
    keep = np.array([0, 299, 300, 999])

    x, kept = read_features(table, FEATURE_COLUMNS, 300, keep=keep)
    assert fake_feast == [300, 300, 300, 100]
    # float64 first, then float32: the numbers XGBoost made of the float64 frame of the window.
    expected = pd.DataFrame(fake_feature_values(amounts)).to_numpy().astype(np.float32)
    assert x.dtype == np.float32 and x.flags.c_contiguous and np.array_equal(x, expected)
    assert kept.index.tolist() == keep.tolist()
    assert kept["amount"].tolist() == [amounts[i] for i in keep]
    assert "transaction_id" not in kept.columns, "only the columns the join needs go to Feast"
    second = fake_feature_values([amounts[i] for i in keep])[FEATURE_COLUMNS[1]]
    assert kept[FEATURE_COLUMNS[1]].tolist() == second, "as Feast served them (float64)"

    empty, none_kept = read_features(table.slice(0, 0), FEATURE_COLUMNS, 300, keep=np.array([], dtype=int))
    assert empty.shape == (0, len(FEATURE_COLUMNS)) and none_kept is not None and none_kept.empty


def test_features_of_spilled_rows_are_those_of_the_table(fake_feast: list[int], tmp_path: Path) -> None:
    amounts = [7.0 + i / 7 for i in range(1000)]
    table = pa.table({"transaction_id": [f"t{i}" for i in range(1000)], "amount": amounts})
    keep = np.array([5, 650])
    from_table = read_features(table, FEATURE_COLUMNS, 256, keep=keep)
    fake_feast.clear()
    from_file = read_features(spill_rows(table, str(tmp_path)), FEATURE_COLUMNS, 256, keep=keep)
    assert fake_feast == [256, 256, 256, 232], "a fresh mapping per chunk, each one join"
    assert np.array_equal(from_file[0], from_table[0])
    assert from_file[1].equals(from_table[1])


def test_spilled_rows_are_mapped_outside_memory_and_outlive_their_file(tmp_path: Path) -> None:
    table = pa.table({"transaction_id": [f"t{i}" for i in range(5000)], "amount": np.arange(5000.0)})
    path = spill_rows(table, str(tmp_path))
    allocated = pa.total_allocated_bytes()
    mapped, again = mapped_rows(path), mapped_rows(path)
    assert pa.total_allocated_bytes() == allocated, "the rows are the file's pages, not a copy"
    Path(path).unlink()
    assert mapped.to_pydict() == again.to_pydict() == table.to_pydict()
    assert mapped.schema.field("transaction_id").type == pa.large_string(), "pandas' layout of strings"
    frame = frame_with_features(mapped, np.ones((5000, 2), np.float32), ("f0", "f1"))
    assert pa.total_allocated_bytes() - allocated < 5000 * 8 * 2, "the frame wraps the strings' pages"
    assert frame["transaction_id"].dtype == "string[pyarrow]" and frame["f1"].dtype == np.float32
